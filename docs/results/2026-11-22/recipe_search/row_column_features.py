"""Does the semantic encoder spread an icon's row and its column over its tokens alike? Logistic probes for the
weather icon's row and column, fitted on the training images and scored on the test images, from the tokens
averaged, from the centre token alone, and from all tokens kept. Writes row_column_features.csv.

    python docs/results/2026-11-22/recipe_search/row_column_features.py
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from models.build import build_model, build_spaces
from models.presets import FreezeConfig
from models.unified import ModelConfig
from tasks.records import load_dataset

torch.set_num_threads(1)
cfg = ModelConfig(variant="sem-sem")
built = build_model(cfg, FreezeConfig("adapters"))
dataset = load_dataset("runs/embedded/data")
und, _ = build_spaces(built, cfg, dataset, "runs/cache")
side = round(und.num_tokens**0.5)
centre = (side // 2 - 1) * side + side // 2 - 1


def features(records: list[dict]) -> tuple[np.ndarray, list[str]]:
    watches = {r["image"]: r["watch"] for r in records if r.get("image")}
    x = np.stack([und.inputs(i).numpy() for i in watches])
    return x, [w["weather_pos"] for w in watches.values()]


x_train, y_train = features(dataset.train)
x_test, y_test = features(dataset.test)
pools = {
    "mean": lambda x: x.mean(1),
    "centre_token": lambda x: x[:, centre],
    "all_tokens": lambda x: x.reshape(len(x), -1),
}
rows = []
for pool, f in pools.items():
    a, b = f(x_train), f(x_test)
    mu, sd = a.mean(0), a.std(0) + 1e-6
    for part, k in (("row", 0), ("column", 1)):
        y_a = [y.split("-")[k] for y in y_train]
        y_b = [y.split("-")[k] for y in y_test]
        clf = LogisticRegression(max_iter=3000, C=0.1).fit((a - mu) / sd, y_a)
        majority = max(np.mean(np.array(y_b) == v) for v in set(y_b))
        rows.append(
            {
                "pool": pool,
                "part": part,
                "accuracy": clf.score((b - mu) / sd, y_b),
                "majority": majority,
                "n_train": len(y_a),
                "n_test": len(y_b),
            }
        )
table = pd.DataFrame(rows)
table.to_csv(Path(__file__).with_name("row_column_features.csv"), index=False)
print(table.round(3).to_string(index=False))
