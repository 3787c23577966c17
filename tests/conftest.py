import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import shutil
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_embedded(tmp_path_factory) -> Path:
    """Data, encoders and LLM at toy size, built once per test session."""
    from models.embedded import build_embedded, tiny_embedded

    root = tmp_path_factory.mktemp("embedded") / "tiny"
    build_embedded(tiny_embedded(root), progress=False, log=lambda *_: None)
    return root


def tiny_config(embedded: Path, runs: Path, variant="vq-vq", preset="lora", name=None, **kw):
    """A tiny training config over the tiny embedded artefacts, writing under `runs`."""
    from models.presets import FreezeConfig
    from models.train import TrainConfig
    from models.unified import ModelConfig

    model = ModelConfig(
        variant=variant,
        llm=str(embedded / "lm"),
        semantic_encoder=str(embedded / "semantic"),
        vq_encoder=str(embedded / "vq"),
    )
    freeze = kw.pop("freeze", None) or FreezeConfig(preset=preset)
    base = dict(
        dataset=str(embedded / "data"),
        out=str(runs / (name or f"{variant}-{preset}")),
        model=model,
        freeze=freeze,
        batch_size=8,
        checkpoint_fractions=[0.5, 1.0],
        cache_dir=str(embedded.parent / "cache"),
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def tiny_train_config(tiny_embedded, tmp_path):
    """A factory of tiny training configs writing under tmp_path."""

    def make(variant="vq-vq", preset="lora", name=None, **kw):
        return tiny_config(tiny_embedded, tmp_path, variant, preset, name, **kw)

    return make


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, tiny_embedded):
    """One short vq-vq and one sem-sem LoRA run at toy size, shared by every test file."""
    from models.train import Trainer

    runs = {}
    for variant in ("vq-vq", "sem-sem"):
        cfg = tiny_config(
            tiny_embedded,
            tmp_path_factory.mktemp("runs"),
            variant,
            "lora",
            epochs=1.0,
            checkpoint_fractions=[0.5, 1.0],
            lr_adapters=3e-3,
            lr_llm=3e-3,
        )
        Trainer(cfg, progress=False).train()
        runs[variant] = cfg
    return runs
