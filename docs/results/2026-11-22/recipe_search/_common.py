"""What the diagnostics here share: a checkpoint with its dataset, spaces and sequence encoder, and the records in
collated batches; the embedded semantic features of the training and test images; the tokens an icon covers."""

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.build import build_model, build_spaces, load_checkpoint
from models.presets import FreezeConfig
from models.sequence import Encoder, collate
from models.unified import ModelConfig
from tasks.records import load_dataset


def load(ckpt: str):
    """(built, dataset, und_space, gen_space, encoder) of a checkpoint, on one thread."""
    torch.set_num_threads(1)
    built, manifest = load_checkpoint(ckpt)
    dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
    und, gen = build_spaces(built, built.model.cfg, dataset, manifest["config"]["cache_dir"])
    return built, dataset, und, gen, Encoder(built.tokenizer, und.num_tokens)


def batches(records: list[dict], size: int, enc: Encoder, und, gen):
    """(records, sequences, batch) per chunk of `size` records."""
    for i in range(0, len(records), size):
        chunk = records[i : i + size]
        seqs = [enc.record(r) for r in chunk]
        yield chunk, seqs, collate(seqs, und, gen, enc.pad_id)


def save_rows(name: str, ckpt: str, rows: list[dict], match: dict | None = None) -> None:
    """Replace this checkpoint's rows in the table `name` beside these scripts (other checkpoints' rows stay); with
    `match`, only its rows that also hold these column values."""
    out = Path(__file__).with_name(name)
    table = pd.DataFrame(rows)
    if out.is_file():
        old = pd.read_csv(out, keep_default_na=False)
        mine = old.checkpoint == ckpt
        for column, value in (match or {}).items():
            mine &= old[column].astype(str) == str(value)
        table = pd.concat([old[~mine], table], ignore_index=True)
    table.to_csv(out, index=False)


def embedded_features() -> tuple[np.ndarray, list[dict], np.ndarray, list[dict]]:
    """(features, watches) of the training images, then of the test images: the embedded semantic encoder's cached
    features (N, tokens, dim), as the default sem-sem model reads them before its own standardisation."""
    cfg = ModelConfig(variant="sem-sem")
    built = build_model(cfg, FreezeConfig("adapters"))
    dataset = load_dataset("runs/embedded/data")
    und, _ = build_spaces(built, cfg, dataset, "runs/cache")
    out = []
    for records in (dataset.train, dataset.test):
        watches = {r["image"]: r["watch"] for r in records if r.get("image")}
        out += [np.stack([und.inputs(i).numpy() for i in watches]), list(watches.values())]
    return tuple(out)


def corner_tokens(corner: str, side: int) -> list[int]:
    """Raster indices of the 2 x 2 tokens an icon in `corner` covers on a side x side token grid."""
    rows = [0, 1] if corner.startswith("top") else [side - 2, side - 1]
    cols = [0, 1] if corner.endswith("left") else [side - 2, side - 1]
    return [r * side + c for r in rows for c in cols]
