"""Does the semantic encoder spread an icon's row and its column over its tokens alike? Logistic probes for the
weather icon's row and column, fitted on the training images and scored on the test images, from the tokens
averaged, from the centre token alone, and from all tokens kept. Writes row_column_features.csv.

    python docs/results/2026-11-22/recipe_search/row_column_features.py
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import embedded_features
from sklearn.linear_model import LogisticRegression

torch.set_num_threads(1)
x_train, w_train, x_test, w_test = embedded_features()
side = round(x_train.shape[1] ** 0.5)
centre = (side // 2 - 1) * side + side // 2 - 1

y_train = [w["weather_pos"] for w in w_train]
y_test = [w["weather_pos"] for w in w_test]
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
