"""Read a dataset folder, or plain LLaVA-format JSON/JSONL with an image folder, through one interface."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unilens.errors import UnilensError


def read_records(path: str | Path) -> list[dict]:
    """LLaVA conversation records from .jsonl (one per line) or .json (a list)."""
    path = Path(path)
    if not path.is_file():
        raise UnilensError(f"records file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UnilensError(f"{path}: not valid JSON ({exc})") from exc
    for i, row in enumerate(rows):
        if "conversations" not in row:
            raise UnilensError(f"{path}: record {i} has no 'conversations' (is this LLaVA-format data?)")
        row.setdefault("task", _guess_task(row))
    return rows


def _guess_task(row: dict) -> str:
    """LLaVA data has no task field: an <image> in the answer means generation, in the question understanding."""
    convs = row["conversations"]
    if any(t["from"] == "gpt" and "<image>" in t["value"] for t in convs):
        return "generation"
    return "vqa"


class ImageStore:
    """Images by id: from images.npy (our datasets) or from files under a folder (LLaVA datasets)."""

    def __init__(self, folder: str | Path, image_size: int | None = None):
        self.folder = Path(folder)
        self.image_size = image_size
        npy = self.folder / "images.npy"
        self.array = np.load(npy, mmap_mode="r") if npy.is_file() else None
        self.index: dict[str, int] = {}
        if self.array is not None:
            with open(self.folder / "images.jsonl") as f:
                for line in f:
                    row = json.loads(line)
                    self.index[row["id"]] = row["index"]

    def __getitem__(self, image_id: str) -> np.ndarray:
        if self.array is not None:
            if image_id not in self.index:
                raise UnilensError(f"image '{image_id}' is not in {self.folder}/images.jsonl")
            return np.asarray(self.array[self.index[image_id]])
        path = self.folder / image_id
        if not path.is_file():
            raise UnilensError(f"image file not found: {path} (records name images relative to the image folder)")
        img = Image.open(path).convert("RGB")
        if self.image_size:
            img = img.resize((self.image_size, self.image_size), Image.Resampling.LANCZOS)
        return np.asarray(img, dtype=np.uint8)

    def ids(self) -> list[str]:
        return list(self.index)


@dataclass
class WorldDataset:
    folder: Path
    manifest: dict
    train: list[dict]
    test: list[dict]
    images: ImageStore

    @property
    def image_size(self) -> int:
        return int(self.manifest["config"]["image_size"])


def load_dataset(folder: str | Path) -> WorldDataset:
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise UnilensError(
            f"not a unilens dataset folder (no manifest.json): {folder} (make one with `unilens data make`)"
        )
    manifest = json.loads(manifest_path.read_text())
    return WorldDataset(
        folder=folder,
        manifest=manifest,
        train=read_records(folder / "train.jsonl"),
        test=read_records(folder / "test.jsonl"),
        images=ImageStore(folder),
    )
