"""Does a trained per-slot map (model.und_slot_rank) make the image tokens' average carry the hour? A logistic probe
on the average over each image's tokens of the shared adapter's output, of the slot map's output, and of their sum
(what the LLM receives before the slot position embeddings), trained on the run's training images, scored on its
200 test images.

    python docs/results/2026-12-05/slot/slot_probe.py CHECKPOINT DATASET OUT.csv
"""

import sys
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from models.build import build_spaces, load_checkpoint
from tasks.records import load_dataset


def averages(model, und, records) -> tuple[dict[str, np.ndarray], np.ndarray]:
    seen, parts, hours = set(), {"adapter": [], "slot_map": [], "sum": []}, []
    for r in records:
        if r["image"] in seen:
            continue
        seen.add(r["image"])
        with torch.no_grad():
            x = model.distort_in(model.norm_in(model.ordered(und.inputs(r["image"]))))
            shared, slot = model.vision_in(x), model.und_slot(x)
        for name, value in (("adapter", shared), ("slot_map", slot), ("sum", shared + slot)):
            parts[name].append(value.mean(0).numpy())
        hours.append(r["watch"]["hour"] % 12)
    return {k: np.stack(v) for k, v in parts.items()}, np.array(hours)


if __name__ == "__main__":
    checkpoint, dataset_dir, out = sys.argv[1:4]
    torch.set_num_threads(1)  # shares the machine with a training run
    built, _ = load_checkpoint(checkpoint)
    model = built.model.eval()
    dataset = load_dataset(dataset_dir)
    und, _ = build_spaces(built, model.cfg, dataset, "/tmp/slot-probe-cache")
    train, y_train = averages(model, und, dataset.train)
    test, y_test = averages(model, und, dataset.test)
    rows = []
    for name in train:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs may stop at its cap; the score is what is reported
            probe = LogisticRegression(max_iter=2000).fit(train[name], y_train)
        rows.append(
            {
                "checkpoint": checkpoint,
                "average_of": name,
                "hour_accuracy": probe.score(test[name], y_test),
                "train_images": len(y_train),
                "test_images": len(y_test),
                "chance": 1 / 12,
                "slot_up_norm": model.und_slot.up.norm().item(),
            }
        )
    table = pd.DataFrame(rows)
    table.to_csv(out, index=False)
    print(table.to_string(index=False))
