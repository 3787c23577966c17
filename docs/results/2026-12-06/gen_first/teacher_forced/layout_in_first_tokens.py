"""How much of the layout (the weather icon's and the battery's corners) the true semantic features carry outside
the items' own tokens: a ridge classifier (the eval's feature probes' kind) on the flattened features of a few token
slots, fitted on the 4000 training images, scored on the 200 test images, also on those whose item sits in a bottom
corner (rows 6-7 of the 8 x 8 grid, away from every slot used here but "all 64").

    python docs/results/2026-12-06/gen_first/teacher_forced/layout_in_first_tokens.py runs/dense/data \
        runs/cache/1d82fceecf684f06-4712e77ea56ea2b9-semantic.npy OUT.csv
"""

import sys

import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeClassifier

from tasks.records import load_dataset

SLOTS = {
    "all 64": slice(0, 64),
    "row 0 (slots 0-7)": slice(0, 8),
    "rows 0-1": slice(0, 16),
    "rows 0-3": slice(0, 32),
    "slot 0": slice(0, 1),
    "slot 27 (centre)": slice(27, 28),
}


def flat(x: np.ndarray, index: dict, watches: list[dict], slots: slice) -> np.ndarray:
    chosen = x[[index[w["image"]] for w in watches]][:, slots]
    return np.asarray(chosen, dtype=np.float64).reshape(len(watches), -1)


def main(data: str, features: str, out: str) -> None:
    dataset = load_dataset(data)
    index = {image: k for k, image in enumerate(dataset.images.ids())}
    x = np.load(features, mmap_mode="r")
    train, test = (
        [r["watch"] | {"image": r["image"]} for r in dataset.train],
        [r["watch"] | {"image": r["image"]} for r in dataset.test],
    )
    train = list({w["image"]: w for w in train}.values())
    test = list({w["image"]: w for w in test}.values())
    rows = []
    for name, slots in SLOTS.items():
        xtr, xte = flat(x, index, train, slots), flat(x, index, test, slots)
        mean, std = xtr.mean(0), xtr.std(0) + 1e-6
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
        for attribute in ("weather_pos", "battery_pos"):
            ytr = [w[attribute] for w in train]
            yte = np.array([w[attribute] for w in test])
            predicted = RidgeClassifier(alpha=10.0).fit(xtr, ytr).predict(xte)
            bottom = np.char.startswith(yte.astype(str), "bottom")
            rows.append(
                {
                    "slots": name,
                    "attribute": attribute,
                    "test_accuracy": float(np.mean(predicted == yte)),
                    "bottom_corner_accuracy": float(np.mean(predicted[bottom] == yte[bottom])),
                    "n_test": len(yte),
                    "n_bottom": int(bottom.sum()),
                }
            )
    table = pd.DataFrame(rows)
    table.to_csv(out, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main(*sys.argv[1:4])
