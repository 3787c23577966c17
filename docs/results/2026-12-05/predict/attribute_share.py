"""How much of each semantic image token's variance one attribute explains, standardised vs whitened.

Why: a linear read of all tokens is invariant to an invertible linear map, but an adapter trained by gradient steps
from a small start, and a cosine loss, both weigh directions by their variance. Whitening (ZCA, eigenvalue floor at
1e-4 of the largest, as models.unified.WhiteningNorm) gives the attribute's directions their share.
For each of the 64 slots, a one-hot regression of the token on the attribute is fitted on the first half of the
images and its R^2 measured on the second; the mean and max over slots are written.

    .venv/bin/python docs/results/2026-12-05/predict/attribute_share.py runs/dense/data runs/cache OUT.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predictability import load, normalised

ATTRIBUTES = ("hour", "weather", "weather_pos", "battery_pos")


def spaces(features: np.ndarray) -> dict[str, np.ndarray]:
    return {"standardised": normalised(features), "whitened": normalised(features, whiten=True)}


def held_out_r2(onehot: np.ndarray, tokens: np.ndarray, train: np.ndarray) -> float:
    x = np.c_[onehot, np.ones(len(onehot))]
    w = np.linalg.lstsq(x[train], tokens[train], rcond=None)[0]
    residual = ((x[~train] @ w - tokens[~train]) ** 2).sum()
    total = ((tokens[~train] - tokens[train].mean(0)) ** 2).sum()
    return 1 - residual / total


def main(dataset: str, cache: str, out: str, n: int = 2400) -> None:
    features, watches = load(Path(dataset), Path(cache), "semantic", n)
    train = np.arange(len(watches)) < len(watches) // 2
    rows = []
    for space, z in spaces(features).items():
        for attribute in ATTRIBUTES:
            values = sorted({getattr(w, attribute) for w in watches})
            onehot = np.eye(len(values))[[values.index(getattr(w, attribute)) for w in watches]]
            r2 = np.array([held_out_r2(onehot, z[:, s], train) for s in range(z.shape[1])])
            rows.append({"space": space, "attribute": attribute, "mean_r2": r2.mean(), "max_r2": r2.max()})
    table = pd.DataFrame(rows)
    table.to_csv(out, index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
