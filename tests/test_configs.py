"""Every shipped config parses into its dataclass: a typo in configs/ fails here, not an hour into a run."""

from pathlib import Path

import pytest

from unilens.config import load_config

CONFIGS = sorted(Path("configs").rglob("*.yaml"))


def _kind(path: Path):
    from analyses.attribute_layers import AttributeConfig
    from analyses.mixing import MixingConfig
    from analyses.patch_layers import PatchConfig
    from analyses.probe_layers import ProbeConfig
    from analyses.transfer import TransferConfig
    from models.embedded import EmbeddedConfig
    from models.encoders.train import EncoderTrainConfig
    from models.lm import LMConfig
    from models.train import TrainConfig
    from tasks.dataset import DataConfig

    parts = path.parts
    if path.name.startswith("encoders"):
        return EncoderTrainConfig
    if "battery" in parts:
        return None
    if "data" in parts:
        return DataConfig
    if "train" in parts:
        return TrainConfig
    for folder, cls in (
        ("probe", ProbeConfig),
        ("patch", PatchConfig),
        ("transfer", TransferConfig),
        ("attribute", AttributeConfig),
        ("mixing", MixingConfig),
    ):
        if folder in parts:
            return cls
    return {
        "embedded.yaml": EmbeddedConfig,
        "embedded_gpu.yaml": EmbeddedConfig,
        "embedded_gpu_smoke.yaml": EmbeddedConfig,
        "lm.yaml": LMConfig,
        "lm_copy.yaml": LMConfig,
    }[path.name]


def test_there_are_configs():
    assert len(CONFIGS) > 30


@pytest.mark.parametrize("path", CONFIGS, ids=str)
def test_config_parses(path):
    cls = _kind(path)
    if cls is None:
        from analyses.battery import cells_of, load_battery

        assert cells_of(load_battery(path))
        return
    cfg = load_config(cls, path)
    if hasattr(cfg, "validate"):
        cfg.validate()
