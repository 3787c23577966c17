import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import shutil
from pathlib import Path

import pytest
import torch

# Toy models gain nothing from threads, and two processes with 2 threads each on 2 cores spin for minutes.
torch.set_num_threads(1)


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


def tiny_built(embedded: Path, variant="sem-sem", **model_fields):
    """A LoRA model at toy size with these ModelConfig fields: (built, dataset, und_space, gen_space)."""
    from models.build import build_model, build_spaces
    from models.presets import FreezeConfig
    from models.unified import ModelConfig
    from tasks.records import load_dataset

    cfg = ModelConfig(
        variant=variant,
        llm=str(embedded / "lm"),
        semantic_encoder=str(embedded / "semantic"),
        vq_encoder=str(embedded / "vq"),
        **model_fields,
    )
    built = build_model(cfg, FreezeConfig("lora"), seed=0)
    dataset = load_dataset(embedded / "data")
    und, gen = build_spaces(built, cfg, dataset, embedded.parent / "cache")
    return built, dataset, und, gen


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


def reload_run(cfg):
    """A trained run reloaded from its last checkpoint: (built, dataset, und_space, gen_space)."""
    from models.build import build_spaces, load_checkpoint
    from models.evaluate import checkpoints_of
    from tasks.records import load_dataset

    built, _ = load_checkpoint(checkpoints_of(cfg.out)[0])
    dataset = load_dataset(cfg.dataset)
    und, gen = build_spaces(built, built.model.cfg, dataset, cfg.cache_dir)
    return built, dataset, und, gen


@pytest.fixture(scope="session")
def loaded_vq_run(trained_runs):
    """The toy vq-vq LoRA run reloaded from its last checkpoint: (built, dataset, und_space, gen_space)."""
    return reload_run(trained_runs["vq-vq"])
