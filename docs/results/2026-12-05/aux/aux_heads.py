"""How well does a run's auxiliary hour head (model.und_aux_loss) read the hour from the average of an image's
embeddings, on training images and on the 200 held-out test images? The same average the training loss used (the
adapter plus the per-slot map, plus the slot position vectors, each token through block 0's input norm; `--raw`:
without it, as the first run was trained), one row per checkpoint (its folder in the first column) x split, with a
95% bootstrap CI over images.

    python docs/results/2026-12-05/aux/aux_heads.py DATASET OUT.csv CHECKPOINT... [--raw]
"""

import sys

import numpy as np
import pandas as pd
import torch

from analyses.plots import mean_ci
from models.build import build_spaces, load_checkpoint
from models.reader import HEADS, labels_of
from tasks.records import load_dataset
from tasks.world import Watch


def head_accuracy(model, und, records, attribute: str, normed: bool) -> np.ndarray:
    seen, hits = set(), []
    for r in records:
        if r["image"] in seen:
            continue
        seen.add(r["image"])
        with torch.no_grad():
            tokens = model.with_slots(model.und_embed(und.inputs(r["image"])), "und")
            pooled = (model.first_norm(tokens) if normed else tokens).mean(0, keepdim=True)
            logits = model.und_aux(pooled)[attribute]
        hits.append(float(logits.argmax(-1).item() == labels_of(Watch.from_dict(r["watch"]))[attribute]))
    return np.array(hits)


if __name__ == "__main__":
    dataset_dir, out, *checkpoints = sys.argv[1:]
    # the first run (commit 1987e60) trained its head on the raw average; later ones on the normed one
    normed = "--raw" not in checkpoints
    checkpoints = [c for c in checkpoints if c != "--raw"]
    torch.set_num_threads(1)
    dataset = load_dataset(dataset_dir)
    rows = []
    for checkpoint in checkpoints:
        built, manifest = load_checkpoint(checkpoint)
        model = built.model.eval()
        und, _ = build_spaces(built, model.cfg, dataset, "runs/cache")
        for attribute in model.cfg.und_aux_loss:
            for split, records in (("train", dataset.train[:4000]), ("test", dataset.test)):
                hits = head_accuracy(model, und, records, attribute, normed)
                mean, lo, hi = mean_ci(hits)
                rows.append(
                    {
                        "checkpoint": checkpoint,
                        "step": manifest["step"],
                        "attribute": attribute,
                        "split": split,
                        "accuracy": mean,
                        "lo": lo,
                        "hi": hi,
                        "n": len(hits),
                        "chance": 1 / HEADS[attribute],
                    }
                )
    table = pd.DataFrame(rows)
    table.to_csv(out, index=False)
    print(table.to_string(index=False))
