"""How much of a generated image's per-token loss its prompt can explain, and how much its true neighbours can.

Why: under teacher forcing a generation model sees every earlier true token. If the neighbours predict a token
almost fully while the prompt's attributes barely move it, the loss gives the prompt almost no gradient, and a model
that copies neighbours and ignores its prompt is near the optimum. This measures both shares with simple held-out
estimators on the cached encoder outputs of the dense world, for the semantic space (1 - cosine on features
standardised per dimension, as `UnifiedModel.gen_target` does by default, or whitened, as it does with
gen_feature_norm "whiten") and the VQ space (cross-entropy in nats over codes).

Predictors, each fitted on the first half of the images and scored on the second:
  slot                       the token's slot alone (a per-slot mean / per-slot code frequency)
  slot+prompt                plus the prompt's icon attributes (weather, weather corner, battery corner)
  slot+neighbours            plus the true left and above tokens (teacher forcing gives all earlier ones)
  slot+neighbours+prompt     both
Semantic: per-slot ridge regressions. VQ: per-slot count tables smoothed toward the coarser table. Both are simple
estimators, so their losses bound what a better predictor could reach from above.

    .venv/bin/python docs/results/2026-12-05/predict/predictability.py runs/dense/data runs/cache OUT.csv
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
from tasks.render import region_slots  # noqa: E402
from tasks.world import Watch  # noqa: E402

PROMPT_ATTRIBUTES = ("weather", "weather_pos", "battery_pos")
SIDE = 8


def load(dataset: Path, cache: Path, kind: str, n: int) -> tuple[np.ndarray, list[Watch]]:
    manifest = json.loads((dataset / "manifest.json").read_text())
    [path] = cache.glob(f"{manifest['content_hash'][:16]}-*-{kind}.npy")
    watches = [Watch.from_dict(json.loads(line)["watch"]) for line in (dataset / "images.jsonl").open()][:n]
    return np.asarray(np.load(path, mmap_mode="r")[:n]), watches


def prompt_cells(watches: list[Watch]) -> np.ndarray:
    """One integer per image: its combination of the prompt's icon attributes."""
    keys = [tuple(getattr(w, a) for a in PROMPT_ATTRIBUTES) for w in watches]
    index = {k: i for i, k in enumerate(sorted(set(keys)))}
    return np.array([index[k] for k in keys])


def neighbours(grid: np.ndarray, fill) -> tuple[np.ndarray, np.ndarray]:
    """Left and above token of every slot (N, T, ...), `fill` where the grid has none."""
    g = grid.reshape(grid.shape[0], SIDE, SIDE, *grid.shape[2:])
    left, above = np.full_like(g, fill), np.full_like(g, fill)
    left[:, :, 1:], above[:, 1:] = g[:, :, :-1], g[:, :-1]
    return left.reshape(grid.shape), above.reshape(grid.shape)


def cosine_loss(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    num = (pred * true).sum(-1)
    return 1 - num / (np.linalg.norm(pred, axis=-1) * np.linalg.norm(true, axis=-1)).clip(1e-6)


def ridge(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, penalty: float = 1.0) -> np.ndarray:
    x, x_test = np.c_[x, np.ones(len(x))], np.c_[x_test, np.ones(len(x_test))]
    w = np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ y)
    return x_test @ w


def normalised(features: np.ndarray, whiten: bool = False) -> np.ndarray:
    """Features standardised per dimension or, with `whiten`, ZCA-whitened with an eigenvalue floor at 1e-4 of the
    largest (as models.unified.WhiteningNorm; fitted here on all images, a negligible leak for a 192 x 192
    covariance), in float64."""
    flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
    if not whiten:
        return (features - flat.mean(0)) / flat.std(0).clip(1e-4)
    variance, basis = np.linalg.eigh(np.cov(flat - flat.mean(0), rowvar=False))
    scale = np.sqrt(np.maximum(variance, 1e-4 * variance.max()))
    return ((features - flat.mean(0)) @ basis / scale) @ basis.T


def semantic_losses(
    features: np.ndarray, cells: np.ndarray, train: np.ndarray, whiten: bool = False
) -> dict[str, np.ndarray]:
    """Per-token held-out losses (test images x slots) of the four predictors, on `normalised` features."""
    z = normalised(features, whiten)
    left, above = neighbours(z, 0.0)
    onehot = np.eye(cells.max() + 1)[cells]
    test = ~train
    out = {name: np.zeros((test.sum(), z.shape[1])) for name in CONTEXTS}
    for s in range(z.shape[1]):
        y = z[:, s]
        for name, parts in {
            "slot": [np.zeros((len(z), 0))],
            "slot+prompt": [onehot],
            "slot+neighbours": [left[:, s], above[:, s]],
            "slot+neighbours+prompt": [left[:, s], above[:, s], onehot],
        }.items():
            x = np.concatenate(parts, 1)
            out[name][:, s] = cosine_loss(ridge(x[train], y[train], x[test]), y[test])
    return out


def smoothed_counts(key: np.ndarray, codes: np.ndarray, train: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """P(code | key) for each test row from the training rows' counts, smoothed toward `prior` (the coarser model's
    probabilities for each test row, (rows, K)): (count + 5 prior) / (n_key + 5)."""
    table = np.zeros((key.max() + 1, prior.shape[1]))
    np.add.at(table, (key[train], codes[train]), 1)
    counts = table[key[~train]]
    return (counts + 5.0 * prior) / (counts.sum(1, keepdims=True) + 5.0)


def vq_losses(codes: np.ndarray, cells: np.ndarray, train: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-token held-out cross-entropies (test images x slots) of the four predictors, nats."""
    left, _ = neighbours(codes, k)  # code k: no left neighbour
    test = ~train
    out = {name: np.zeros((test.sum(), codes.shape[1])) for name in CONTEXTS}
    for s in range(codes.shape[1]):
        y = codes[:, s]
        freq = (np.bincount(y[train], minlength=k) + 0.1) / (train.sum() + 0.1 * k)
        slot = np.tile(freq, (test.sum(), 1))
        nb = smoothed_counts(left[:, s], y, train, slot)
        predictors = {
            "slot": slot,
            "slot+prompt": smoothed_counts(cells, y, train, slot),
            "slot+neighbours": nb,
            "slot+neighbours+prompt": smoothed_counts(left[:, s] * (cells.max() + 1) + cells, y, train, nb),
        }
        for name, p in predictors.items():
            out[name][:, s] = -np.log(p[np.arange(test.sum()), y[test]])
    return out


CONTEXTS = ("slot", "slot+prompt", "slot+neighbours", "slot+neighbours+prompt")


def summarise(space: str, losses: dict[str, np.ndarray], icon_mask: np.ndarray) -> list[dict]:
    rows = []
    for tokens, mask in (("all", np.ones_like(icon_mask)), ("weather icon", icon_mask)):
        base = losses["slot"][mask].mean()
        for name in CONTEXTS:
            loss = losses[name][mask].mean()
            rows.append(
                {"space": space, "tokens": tokens, "context": name, "loss": loss, "share_removed": 1 - loss / base}
            )
    return rows


def main(dataset: str, cache: str, out: str, n: int = 2400) -> None:
    dataset_dir, cache_dir = Path(dataset), Path(cache)
    rows = []
    features, watches = load(dataset_dir, cache_dir, "semantic", n)
    cells = prompt_cells(watches)
    train = np.arange(len(watches)) < len(watches) // 2
    icon = np.zeros((len(watches), SIDE * SIDE), bool)
    for i, w in enumerate(watches):
        icon[i, region_slots(w, "weather", SIDE)] = True
    rows += summarise("semantic (1 - cosine)", semantic_losses(features, cells, train), icon[~train])
    whitened = semantic_losses(features, cells, train, whiten=True)
    rows += summarise("semantic whitened (1 - cosine)", whitened, icon[~train])
    codes, _ = load(dataset_dir, cache_dir, "vq", n)
    codes = codes.astype(np.int64)
    rows += summarise("vq (cross-entropy, nats)", vq_losses(codes, cells, train, int(codes.max()) + 1), icon[~train])
    table = pd.DataFrame(rows)
    table.to_csv(out, index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
