"""What the understanding side's input tokens are made of: how much of their variance is the slot, the face colour
(a nuisance no text names) and the weather, in each input space the models read.

Why: VQ input reads the dial and the icons where semantic input, with the same LLM and recipe, reads nothing. If the
attributes the questions ask are a tiny share of a semantic token's variance next to a nuisance, a gradient step on
the adapter and LoRA hardly sees them, which whitening (models.unified.WhiteningNorm) would change.

Spaces: the semantic features standardised per dimension (the default), the same whitened (und_feature_norm:
whiten), and the VQ code vectors standardised per dimension (what vq-X models read). On the first 3000 training
images of the dense world, the norm and every fit on the first half, the icon and probe columns scored on the second:
  slot_share, image_share   variance of the per-slot mean and of each image's mean over its slots (of the total,
                            over all 3000 images)
  icon_weather_share        at the weather icon's first token, its slot's mean removed: the weather kind's share of
                            the variance (between-class, held-out class means)
  icon_face_share           the same token: held-out R^2 of a ridge regression on the face colour (RGB and squares)
  mean_weather, mean_hour   held-out accuracy of a logistic probe (C=1) on the average of the image's tokens: what a
                            head attending evenly to the image would have to read

    python docs/results/2026-12-05/nuisance/feature_shares.py DATASET CACHE SEMANTIC_ENCODER VQ_ENCODER OUT.csv
    (here: runs/dense/data runs/cache runs/embedded/semantic runs/embedded/vq feature_shares.csv; the encoders'
    features are read from CACHE, computed there first if missing)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression, Ridge

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
from models.unified import FeatureNorm, WhiteningNorm  # noqa: E402
from probes.encoder import load_space  # noqa: E402
from tasks.records import load_dataset  # noqa: E402
from tasks.render import region_slots  # noqa: E402
from tasks.world import Watch  # noqa: E402

N_IMAGES = 3000
SIDE = 8


def shares(z: np.ndarray, watches: list[Watch]) -> dict[str, float]:
    n, half = len(z), len(z) // 2
    total = z.var(axis=(0, 1)).sum()
    slot_mean, image_mean = z.mean(0, keepdims=True), z.mean(1, keepdims=True)
    weather = np.array([w.weather for w in watches])
    hour = np.array([w.hour for w in watches])
    face = np.array([w.face_color for w in watches], float) / 255
    face = np.c_[face, face**2]

    slots = np.array([region_slots(w, "weather", SIDE)[0] for w in watches])
    token = z[np.arange(n), slots]
    for s in np.unique(slots):  # the slot's mean, from the fitting half
        token[slots == s] -= token[:half][slots[:half] == s].mean(0)
    test = token[half:]
    spread = ((test - test.mean(0)) ** 2).sum()
    means = {c: token[:half][weather[:half] == c].mean(0) for c in np.unique(weather)}
    explained = np.stack([means[c] for c in weather[half:]])
    weather_share = 1 - ((test - explained) ** 2).sum() / spread
    face_fit = Ridge(1.0).fit(face[:half], token[:half]).predict(face[half:])
    face_share = 1 - ((test - face_fit) ** 2).sum() / spread

    pooled = z.mean(1)
    probe = {
        name: LogisticRegression(max_iter=3000).fit(pooled[:half], y[:half]).score(pooled[half:], y[half:])
        for name, y in (("weather", weather), ("hour", hour))
    }
    return {
        "slot_share": (slot_mean**2).mean(axis=(0, 1)).sum() / total,
        "image_share": ((image_mean - slot_mean.mean(1, keepdims=True)) ** 2).mean(axis=(0, 1)).sum() / total,
        "icon_weather_share": weather_share,
        "icon_face_share": face_share,
        "mean_weather": probe["weather"],
        "mean_hour": probe["hour"],
        "majority_weather": pd.Series(weather[half:]).value_counts(normalize=True).max(),
        "majority_hour": pd.Series(hour[half:]).value_counts(normalize=True).max(),
    }


def main(dataset_dir: Path, cache: Path, semantic_dir: Path, vq_dir: Path, out: Path) -> None:
    torch.set_num_threads(1)
    dataset = load_dataset(dataset_dir)
    lines = (dataset_dir / "images.jsonl").open()
    watches = [Watch.from_dict(json.loads(line)["watch"]) for line in lines][:N_IMAGES]
    semantic = torch.tensor(np.asarray(load_space(semantic_dir, dataset, cache).features[:N_IMAGES], np.float32))
    vq = load_space(vq_dir, dataset, cache)
    book, codes = vq.codebook, torch.tensor(np.asarray(vq.codes[:N_IMAGES], np.int64))
    fit = slice(0, N_IMAGES // 2)
    rows = []
    for space, features, norm in (
        ("semantic, standardised", semantic, FeatureNorm(semantic.shape[-1])),
        ("semantic, whitened", semantic, WhiteningNorm(semantic.shape[-1])),
        ("vq code vectors, standardised", book[codes].float(), FeatureNorm(book.shape[-1])),
    ):
        norm.fit(features[fit])
        with torch.no_grad():
            z = norm(features).double().numpy()
        rows.append({"space": space, **shares(z, watches)})
        print(rows[-1], flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).round(4).to_csv(out, index=False)


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:6]))
