"""The embedded default: every artefact a unified model needs, built and trained here (no hub).

    {root}/data       world dataset           (tasks)
    {root}/semantic   tiny ViT, SigLIP loss   (models.encoders)
    {root}/vq         tiny VQ-VAE
    {root}/lm         tokenizer + small Llama pre-trained on text only

Each step is skipped when its folder already exists, so a re-run resumes where it stopped. Every run ends by writing
{root}/build.json (models.fingerprint): the parts' content hashes and the machine that built each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from models.encoders.semantic import ViTConfig
from models.encoders.train import EncoderTrainConfig, train_semantic, train_vq
from models.encoders.vq import VQConfig
from models.fingerprint import describe_build, write_build_record
from models.lm import LMConfig, pretrain_lm
from tasks.dataset import DataConfig, make_dataset
from unilens.errors import UnilensError


@dataclass
class EmbeddedConfig:
    root: str = "runs/embedded"
    data: DataConfig = field(default_factory=DataConfig)
    semantic: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    vq: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    lm: LMConfig = field(default_factory=LMConfig)

    def paths(self) -> dict[str, Path]:
        root = Path(self.root)
        return {name: root / name for name in ("data", "semantic", "vq", "lm")}


def build_embedded(cfg: EmbeddedConfig, progress: bool = True, log=print) -> dict[str, Path]:
    paths = cfg.paths()
    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)  # the project's own workspace (runs/ by default): create it
    for name in ("semantic", "vq", "lm"):
        getattr(cfg, name).dataset = str(paths["data"])
    _check_sizes(cfg)
    steps = [
        ("data", lambda out: make_dataset(cfg.data, out, progress=progress)),
        ("semantic", lambda out: train_semantic(cfg.semantic, out, progress=progress)),
        ("vq", lambda out: train_vq(cfg.vq, out, progress=progress)),
        ("lm", lambda out: pretrain_lm(cfg.lm, out, progress=progress)),
    ]
    built_now = set()
    for name, run in steps:
        if paths[name].exists():
            log(f"[embedded] {name}: exists at {paths[name]}, skipped")
            continue
        log(f"[embedded] {name}: building {paths[name]}")
        report = run(paths[name])
        built_now.add(name)
        if isinstance(report, dict):
            log(f"[embedded] {name}: " + json.dumps({k: _short(v) for k, v in report.items()}))
    log(f"[embedded] {describe_build(write_build_record(root, paths, built_now))}, recorded in {root / 'build.json'}")
    return paths


def _short(v):
    return round(v, 4) if isinstance(v, float) else v


def _check_sizes(cfg: EmbeddedConfig) -> None:
    size = cfg.data.image_size
    for name, enc in (("semantic.vit", cfg.semantic.vit), ("vq.vq", cfg.vq.vq)):
        if enc.image_size != size:
            raise UnilensError(f"{name}.image_size is {enc.image_size} but data.image_size is {size}: make them equal")


def tiny_embedded(root: str | Path, seed: int = 0) -> EmbeddedConfig:
    """Toy sizes for tests: seconds, not minutes."""
    data = DataConfig(seed=seed, image_size=32, n_images=48, n_test_images=16, contact_sheet_images=4)
    vit = ViTConfig(image_size=32, patch_size=8, width=32, depth=2, heads=2, embed_dim=16)
    vq = VQConfig(image_size=32, downsample=8, channels=16, code_dim=8, codebook_size=32)
    return EmbeddedConfig(
        root=str(root),
        data=data,
        semantic=EncoderTrainConfig(steps=8, batch_size=16, vit=vit, seed=seed),
        vq=EncoderTrainConfig(steps=8, batch_size=16, vq=vq, seed=seed),
        lm=LMConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=2, d_ff=64, steps=8, batch_size=16, seed=seed),
    )
