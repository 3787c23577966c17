"""What the checkpoint diagnostics here share: a checkpoint with its dataset, spaces and sequence encoder, and the
records in collated batches."""

from pathlib import Path

import pandas as pd
import torch

from models.build import build_spaces, load_checkpoint
from models.sequence import Encoder, collate
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


def save_rows(name: str, ckpt: str, rows: list[dict]) -> None:
    """Replace this checkpoint's rows in the table `name` beside these scripts (other checkpoints' rows stay)."""
    out = Path(__file__).with_name(name)
    table = pd.DataFrame(rows)
    if out.is_file():
        old = pd.read_csv(out, keep_default_na=False)
        table = pd.concat([old[old.checkpoint != ckpt], table], ignore_index=True)
    table.to_csv(out, index=False)
