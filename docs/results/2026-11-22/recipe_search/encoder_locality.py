"""Which of the semantic ViT's layers keeps an icon local? The unified models read the penultimate layer (LLaVA's
choice) and learn an icon's row, never its column or its detail. Per ViT layer, logistic probes fitted on the
training images and scored on the test images:

- weather, from the tokens averaged / from the icon's own 2 x 2 corner tokens / from the opposite corner's tokens
  (what leaked there);
- the icon's column from the tokens averaged;
- a token's own grid column from that token alone (does a token still know where it is?);
- icon or not, for the 16 corner tokens (is the weather icon salient where it is?).

Writes encoder_locality.csv.

    python docs/results/2026-11-22/recipe_search/encoder_locality.py
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import corner_tokens
from sklearn.linear_model import LogisticRegression

from models.encoders.images import to_tensor
from models.encoders.semantic import load_semantic
from tasks.records import load_dataset

torch.set_num_threads(2)
encoder = load_semantic("runs/embedded/semantic")
dataset = load_dataset("runs/embedded/data")
side = round(encoder.num_tokens**0.5)


def opposite(corner: str) -> str:
    row, col = corner.split("-")
    return f"{'bottom' if row == 'top' else 'top'}-{'right' if col == 'left' else 'left'}"


@torch.no_grad()
def layers(records: list[dict]) -> tuple[list[np.ndarray], list[dict]]:
    """Per layer (N, T, width) hidden states, and each image's watch."""
    watches = {r["image"]: r["watch"] for r in records if r.get("image")}
    ids = list(watches)
    out = None
    for start in range(0, len(ids), 128):
        pixels = to_tensor(np.stack([dataset.images[i] for i in ids[start : start + 128]]))
        states = [s.float().numpy() for s in encoder.backbone.hidden_states(pixels)]
        out = states if out is None else [np.concatenate([a, b]) for a, b in zip(out, states, strict=True)]
    return out, list(watches.values())


def probe(a: np.ndarray, y_a: list, b: np.ndarray, y_b: list) -> tuple[float, float]:
    mu, sd = a.mean(0), a.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000, C=0.1).fit((a - mu) / sd, y_a)
    majority = max(np.mean(np.array(y_b) == v) for v in set(y_b))
    return clf.score((b - mu) / sd, y_b), majority


train_states, train_watches = layers(dataset.train)
test_states, test_watches = layers(dataset.test)
rng = np.random.default_rng(0)
corners = ("top-left", "top-right", "bottom-left", "bottom-right")
rows = []
for layer, (a, b) in enumerate(zip(train_states, test_states, strict=True)):
    tasks = {}
    weather = ([w["weather"] for w in train_watches], [w["weather"] for w in test_watches])
    tasks["weather | tokens averaged"] = (a.mean(1), weather[0], b.mean(1), weather[1])

    def at(x, watches, pick):
        return np.stack([x[i, pick(w)].mean(0) for i, w in enumerate(watches)])

    tasks["weather | icon's own tokens"] = (
        at(a, train_watches, lambda w: corner_tokens(w["weather_pos"], side)),
        weather[0],
        at(b, test_watches, lambda w: corner_tokens(w["weather_pos"], side)),
        weather[1],
    )
    tasks["weather | opposite corner's tokens"] = (
        at(a, train_watches, lambda w: corner_tokens(opposite(w["weather_pos"]), side)),
        weather[0],
        at(b, test_watches, lambda w: corner_tokens(opposite(w["weather_pos"]), side)),
        weather[1],
    )
    column = tuple([w["weather_pos"].split("-")[1] for w in ws] for ws in (train_watches, test_watches))
    tasks["icon's column | tokens averaged"] = (a.mean(1), column[0], b.mean(1), column[1])

    def own_column(x):
        n = len(x)
        tok = rng.integers(0, side * side, size=n)
        return x[np.arange(n), tok], list(tok % side)

    xa, ya = own_column(a)
    xb, yb = own_column(b)
    tasks["token's own column | that token"] = (xa, ya, xb, yb)

    def iconness(x, watches):
        feats, labels = [], []
        for i, w in enumerate(watches):
            icon = set(corner_tokens(w["weather_pos"], side))
            for c in corners:
                for t in corner_tokens(c, side):
                    feats.append(x[i, t])
                    labels.append(t in icon)
        return np.stack(feats), labels

    tasks["icon or not | a corner token"] = (*iconness(a, train_watches), *iconness(b, test_watches))
    for name, (xa, ya, xb, yb) in tasks.items():
        accuracy, majority = probe(xa, ya, xb, yb)
        rows.append(
            {
                "layer": layer,
                "task": name,
                "accuracy": accuracy,
                "majority": majority,
                "n_train": len(ya),
                "n_test": len(yb),
            }
        )
        print(layer, name, round(accuracy, 3), round(majority, 3), flush=True)
table = pd.DataFrame(rows)
table.to_csv(Path(__file__).with_name("encoder_locality.csv"), index=False)
print(table.pivot(index="layer", columns="task", values="accuracy").round(3).to_string())
