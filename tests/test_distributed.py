"""Two CPU processes (gloo) under `accelerate launch` train exactly what one process trains at the same global
batch: each takes half of every batch, losses are normalised by global counts and gradients summed."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from models.evaluate import checkpoints_of
from models.presets import FreezeConfig
from models.train import Trainer
from unilens.config import to_dict


@pytest.mark.parametrize(
    ("variant", "text_loss_unit", "regions"), [("sem-vq", "token", {}), ("vq-vq", "answer", {"weather": 4.0})]
)
def test_two_processes_match_one_at_the_same_global_batch(
    tiny_train_config, tmp_path, variant, text_loss_unit, regions
):
    def run_config(name: str):
        # no LoRA dropout: its random masks would differ between one process and two
        return tiny_train_config(
            variant,
            "lora",
            name=name,
            epochs=1.0,
            freeze=FreezeConfig("lora", lora_dropout=0.0),
            checkpoint_fractions=[1.0],
            text_loss_unit=text_loss_unit,
            gen_region_weights=regions,  # weighted image tokens: each process normalises by the global weight sum
        )

    single, double = run_config("single"), run_config("double")
    Trainer(single, progress=False).train()
    path = tmp_path / "double.yaml"
    path.write_text(yaml.safe_dump(to_dict(double)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # accelerate's --cpu starts one process (multi-CPU goes through mpirun); --multi_gpu starts torchrun workers,
    # and on a machine without CUDA the trainer joins them over gloo
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29533",
        "-m",
        "unilens.cli",
        "train",
        str(path),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "double" / "summary.json").read_text())["world_size"] == 2
    assert json.loads((tmp_path / "single" / "summary.json").read_text())["world_size"] == 1
    logs = [
        [json.loads(r) for r in (p / "log.jsonl").read_text().splitlines()]
        for p in (tmp_path / "single", tmp_path / "double")
    ]
    assert len(logs[0]) == len(logs[1]) > 3
    for a, b in zip(*logs, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a, b)
    w1 = load_file(str(checkpoints_of(single.out)[0] / "trainable.safetensors"))
    w2 = load_file(str(checkpoints_of(double.out)[0] / "trainable.safetensors"))
    assert w1.keys() == w2.keys()
    worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert worst < 1e-4, worst
    assert any(not torch.equal(w1[k], torch.zeros_like(w1[k])) for k in w1 if "lora_B" in k)
