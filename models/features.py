"""Frozen encoder outputs, computed once per (dataset, encoder) and cached on disk: training never re-encodes.

A *space* is what a unified model sees of an image through one encoder:
    SemanticSpace   features (N, T, D) float16; model input and generation target are the features
    VQSpace         codes (N, T) int; model input is the code vectors, generation target the code ids
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.encoders.images import to_tensor
from tasks.records import WorldDataset
from unilens.io import atomic_write_json, sha256_file, sha256_json

# Keys of an embedded part's config.json that record how it was made, not what it computes: the training report
# holds wall-clock seconds and the dataset is the path the user typed, so two builds with equal weights differed.
PROVENANCE_KEYS = ("train_report", "dataset")


def encoder_hash(folder: str | Path) -> str:
    """Content hash of a part folder (encoder or LLM): every safetensors file, and config.json without its provenance
    keys. Equal weights and architecture give equal hashes, whenever and wherever they were built."""
    folder = Path(folder)
    digests = {f.name: sha256_file(f) for f in sorted(folder.glob("*.safetensors"))}
    config = folder / "config.json"
    if config.is_file():
        settings = json.loads(config.read_text())
        digests["config.json"] = sha256_json({k: v for k, v in settings.items() if k not in PROVENANCE_KEYS})
    return sha256_json(digests)


def legacy_encoder_hash(folder: str | Path) -> str:
    """The rule checkpoints written before 2026-12-03 recorded: config.json's bytes, training report included."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("config.json"))
    return sha256_json({f.name: sha256_file(f) for f in files})


class SemanticSpace:
    kind = "semantic"

    def __init__(self, features: np.ndarray, index: dict[str, int]):
        self.features = features
        self.index = index
        self.num_tokens, self.dim = features.shape[1], features.shape[2]

    def inputs(self, image_id: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.features[self.index[image_id]], dtype=np.float32))

    def targets(self, image_id: str) -> torch.Tensor:
        return self.inputs(image_id)


class VQSpace:
    kind = "vq"

    def __init__(self, codes: np.ndarray, index: dict[str, int], codebook: torch.Tensor):
        self.codes = codes
        self.index = index
        self.codebook = codebook
        self.num_tokens, self.dim = codes.shape[1], codebook.shape[1]
        self.codebook_size = codebook.shape[0]

    def inputs(self, image_id: str) -> torch.Tensor:
        return self.codebook[self.targets(image_id)]

    def targets(self, image_id: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.codes[self.index[image_id]], dtype=np.int64))


def build_space(encoder, encoder_dir: str | Path, dataset: WorldDataset, cache_dir: str | Path, progress: bool = False):
    """Load the cached space for (dataset, encoder), computing it once if absent."""
    cache_dir = Path(cache_dir)
    key = f"{dataset.manifest['content_hash'][:16]}-{encoder_hash(encoder_dir)[:16]}-{encoder.kind}"
    path = cache_dir / f"{key}.npy"
    ids = dataset.images.ids()
    index = {image_id: i for i, image_id in enumerate(ids)}
    if not path.is_file():
        _compute(encoder, dataset, ids, path, progress)
    array = np.load(path, mmap_mode="r")
    if encoder.kind == "vq":
        return VQSpace(array, index, encoder.codebook.float().cpu())
    return SemanticSpace(array, index)


@torch.no_grad()
def _compute(encoder, dataset: WorldDataset, ids: list[str], path: Path, progress: bool, batch: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    out = None
    for start in tqdm(range(0, len(ids), batch), desc=f"encode {encoder.kind}", disable=not progress):
        pixels = to_tensor(np.stack([dataset.images[i] for i in ids[start : start + batch]]))
        if encoder.kind == "vq":
            values = encoder.codes(pixels).cpu().numpy().astype(np.int32)
        else:
            values = encoder.features(pixels).float().cpu().numpy().astype(np.float16)
        if out is None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=values.dtype, shape=(len(ids), *values.shape[1:]))
        out[start : start + len(values)] = values
    out.flush()
    del out
    tmp.replace(path)
    atomic_write_json(path.with_suffix(".json"), {"images": len(ids), "kind": encoder.kind})
