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


@pytest.fixture
def tiny_train_config(tiny_embedded, tmp_path):
    """A factory of tiny training configs writing under tmp_path."""
    from models.presets import FreezeConfig
    from models.train import TrainConfig
    from models.unified import ModelConfig

    def make(variant="vq-vq", preset="lora", name=None, **kw):
        model = ModelConfig(
            variant=variant,
            llm=str(tiny_embedded / "lm"),
            semantic_encoder=str(tiny_embedded / "semantic"),
            vq_encoder=str(tiny_embedded / "vq"),
        )
        freeze = kw.pop("freeze", None) or FreezeConfig(preset=preset)
        base = dict(
            dataset=str(tiny_embedded / "data"),
            out=str(tmp_path / (name or f"{variant}-{preset}")),
            model=model,
            freeze=freeze,
            batch_size=8,
            checkpoint_fractions=[0.5, 1.0],
            cache_dir=str(tiny_embedded.parent / "cache"),
        )
        base.update(kw)
        return TrainConfig(**base)

    return make


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
