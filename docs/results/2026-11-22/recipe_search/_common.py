"""What the checkpoint diagnostics here share: a checkpoint with its dataset, spaces and sequence encoder, and the
records in collated batches."""

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
