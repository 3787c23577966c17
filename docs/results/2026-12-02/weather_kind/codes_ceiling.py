"""How much of the weather's kind the icon corner's own input tokens carry, before any model: probes on the cached
encoder inputs of the dense world's icon corner (k x k tokens, concatenated), fitted on the 4000 training images and
scored on the 200 test images.

    python docs/results/2026-12-02/weather_kind/codes_ceiling.py
"""

from __future__ import annotations

import json

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from where_lost import corner_slots

from models.encoders.vq import load_vq
from models.features import encoder_hash

DATA, CACHE = "runs/dense/data", "runs/cache"


def main() -> None:
    meta = [json.loads(line) for line in open(f"{DATA}/images.jsonl")]
    content = json.load(open(f"{DATA}/manifest.json"))["content_hash"][:16]
    codes = np.load(f"{CACHE}/{content}-{encoder_hash('runs/embedded/vq')[:16]}-vq.npy")
    semantic = np.load(f"{CACHE}/{content}-{encoder_hash('runs/embedded/semantic')[:16]}-semantic.npy", mmap_mode="r")
    codebook = load_vq("runs/embedded/vq").codebook.float().numpy()
    y = np.array([m["watch"]["weather"] for m in meta])
    train = np.array([m["role"] != "test" for m in meta])
    print(f"{train.sum()} training and {(~train).sum()} test images")
    probes = {
        "linear": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
        "mlp": lambda: make_pipeline(StandardScaler(), MLPClassifier((256,), max_iter=500, random_state=0)),
        "boosted trees": lambda: HistGradientBoostingClassifier(random_state=0),
    }
    for k in (1, 2, 3):
        slots = [corner_slots(m["watch"]["weather_pos"], 8, k) for m in meta]
        spaces = {
            "vq code vectors": np.stack([codebook[codes[i, s]].reshape(-1) for i, s in enumerate(slots)]),
            "semantic features": np.stack([np.asarray(semantic[i, s]).reshape(-1) for i, s in enumerate(slots)]),
        }
        for space, X in spaces.items():
            for name, make in probes.items():
                if space == "semantic features" and name != "linear":
                    continue
                clf = make().fit(X[train], y[train])
                print(f"{k}x{k} corner, {space:17s}, {name:13s}: test {clf.score(X[~train], y[~train]):.3f}")


if __name__ == "__main__":
    main()
