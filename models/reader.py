"""The attribute reader: a small CNN trained on ground-truth world images that reads attributes back from any
image, so generated images get an attribute-level score (the paper only had FID)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from models.encoders.images import to_tensor
from models.fit import optimize
from tasks.records import WorldDataset
from tasks.world import CORNERS, WEATHERS, Watch
from unilens.config import from_dict, to_dict
from unilens.errors import UnilensError
from unilens.io import atomic_dir

HEADS = {
    "weather": len(WEATHERS),
    "weather_pos": len(CORNERS),
    "battery_pos": len(CORNERS),
    "battery_decile": 10,
    "hour": 12,
    "minute5": 12,  # minute // 5: five-minute bins
}


def labels_of(watch: Watch) -> dict[str, int]:
    return {
        "weather": WEATHERS.index(watch.weather),
        "weather_pos": CORNERS.index(watch.weather_pos),
        "battery_pos": CORNERS.index(watch.battery_pos),
        "battery_decile": min(watch.battery // 10, 9),
        "hour": watch.hour % 12,
        "minute5": watch.minute // 5,
    }


@dataclass
class ReaderConfig:
    image_size: int = 128
    channels: int = 32
    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


class AttributeReader(nn.Module):
    def __init__(self, cfg: ReaderConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        layers: list[nn.Module] = []
        c_in = 3
        size = cfg.image_size
        while size > 8:
            c_out = min(c * 4, c * (2 ** (len(layers) // 3)))
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in, size = c_out, size // 2
        self.trunk = nn.Sequential(*layers, nn.Conv2d(c_in, 16, 1), nn.Flatten())
        self.heads = nn.ModuleDict({name: nn.Linear(16 * size * size, n) for name, n in HEADS.items()})

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(pixels)
        return {name: head(z) for name, head in self.heads.items()}

    @torch.no_grad()
    def read(self, images: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
        """Predicted class per head for uint8 (N, H, W, 3) images."""
        self.eval()
        outs: dict[str, list] = {name: [] for name in HEADS}
        for i in range(0, len(images), batch):
            logits = self(to_tensor(images[i : i + batch]))
            for name, value in logits.items():
                outs[name].append(value.argmax(-1).numpy())
        return {name: np.concatenate(v) for name, v in outs.items()}

    def save_pretrained(self, folder: str | Path, report: dict) -> None:
        with atomic_dir(folder, overwrite=True) as tmp:
            save_file(self.state_dict(), str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(
                json.dumps({"kind": "reader", "config": to_dict(self.cfg), "report": report}, indent=2)
            )


def load_reader(folder: str | Path) -> AttributeReader:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UnilensError(f"no attribute reader at {folder} (train one with `unilens reader train`)")
    meta = json.loads((folder / "config.json").read_text())
    reader = AttributeReader(from_dict(ReaderConfig, meta["config"]))
    reader.load_state_dict(load_file(str(folder / "model.safetensors")))
    return reader.eval()


def _images_and_labels(
    dataset: WorldDataset, records: list[dict]
) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """The records' distinct images, in order of first use: their ids, pixels and labels per head."""
    seen: dict[str, Watch] = {}
    for r in records:
        seen.setdefault(r["image"], Watch.from_dict(r["watch"]))
    images = np.stack([dataset.images[i] for i in seen])
    labels = [labels_of(w) for w in seen.values()]
    return list(seen), images, {name: np.array([lab[name] for lab in labels]) for name in HEADS}


def accuracy(reader: AttributeReader, images: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, float]:
    pred = reader.read(images)
    return {name: float((pred[name] == labels[name]).mean()) for name in HEADS}


def train_reader(
    cfg: ReaderConfig,
    dataset: WorldDataset,
    out: str | Path,
    progress: bool = True,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Train the reader on the dataset's training images (each passed through `transform` first, when given: a
    reader of a tokenizer's reconstructions) and report its accuracy on the test images, transformed alike."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    _, images, labels = _images_and_labels(dataset, dataset.train)
    if images.shape[1] != cfg.image_size:
        raise UnilensError(f"reader image_size {cfg.image_size} differs from the dataset's {images.shape[1]} px")
    _, test_images, test_labels = _images_and_labels(dataset, dataset.test)
    if transform is not None:
        images, test_images = transform(images), transform(test_images)
    reader = AttributeReader(cfg)
    opt = torch.optim.AdamW(reader.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    reader.train()

    def step_loss(_step: int) -> tuple[torch.Tensor, float]:
        idx = rng.choice(len(images), size=min(cfg.batch_size, len(images)), replace=False)
        logits = reader(to_tensor(images[idx]))
        loss = sum(F.cross_entropy(logits[n], torch.from_numpy(labels[n][idx])) for n in HEADS)
        return loss, loss.item()

    optimize(list(reader.parameters()), step_loss, opt, sched, cfg.steps, "reader", progress, clip=None)
    report = {
        "test_accuracy": accuracy(reader, test_images, test_labels),
        "train_images": len(images),
        "test_images": len(test_images),
    }
    reader.save_pretrained(out, report)
    return report


@torch.no_grad()
def reconstruct(vq, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """uint8 images through a VQ tokenizer and back: what any generator in its code space can at best draw."""
    from models.encoders.images import to_uint8

    parts = [to_uint8(vq.decode(vq.codes(to_tensor(images[i : i + batch])))) for i in range(0, len(images), batch)]
    return np.concatenate(parts)


def tokenizer_ceiling(
    reader: AttributeReader, vq, dataset: WorldDataset, retrained: AttributeReader | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Per test image and attribute: is it read right from the image itself (`truth`) and from the tokenizer's
    reconstruction of it (`reconstruction`)? An attribute read from the images but not from their
    reconstructions is one the tokenizer drops: no VQ model built on it can draw it (the reader that scores
    generations is this one). `retrained`, a reader trained on reconstructions of the training images, tells a
    blurred attribute (read again once the reader knows the blur) from a lost one. Also returns the
    reconstructions."""
    ids, images, labels = _images_and_labels(dataset, dataset.test)
    recon = reconstruct(vq, images)
    reads = {"truth": reader.read(images), "reconstruction": reader.read(recon)}
    if retrained is not None:
        reads["retrained"] = retrained.read(recon)
    rows = [
        {"image": image, "attribute": name}
        | {column: float(read[name][i] == labels[name][i]) for column, read in reads.items()}
        for name in HEADS
        for i, image in enumerate(ids)
    ]
    return pd.DataFrame(rows), recon
