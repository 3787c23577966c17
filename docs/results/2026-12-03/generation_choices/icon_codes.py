"""Is the weather's kind in the VQ codes a generator is trained on? For the images that show the icon in each corner,
and each token slot: how well the slot's code alone tells the kind on test images (the commonest kind per code on
training images; chance: the commonest kind's share), and how many nats knowing the kind takes off the code's
entropy (plug-in, training images: biased upwards when a code is rare, so read it as a scale, not a value).
Writes `icon_codes.csv` beside this script (one row per corner x slot) and prints each corner's best slots.

    python docs/results/2026-12-03/generation_choices/icon_codes.py DATASET VQ_CACHE.npy
"""

import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.records import load_dataset
from tasks.world import CORNERS, WEATHERS

HERE = Path(__file__).parent


def entropy(counts: Counter) -> float:
    p = np.array(list(counts.values()), dtype=float)
    p /= p.sum()
    return float(-(p * np.log(p)).sum())


def main(dataset_dir: str, codes_path: str) -> None:
    dataset = load_dataset(dataset_dir)
    codes = np.load(codes_path)
    index = {image: i for i, image in enumerate(dataset.images.ids())}
    split = {
        name: {r["image"]: r["watch"] for r in recs}
        for name, recs in (("train", dataset.train), ("test", dataset.test))
    }
    rows = []
    for corner in CORNERS:
        train = [(codes[index[i]], w["weather"]) for i, w in split["train"].items() if w["weather_pos"] == corner]
        test = [(codes[index[i]], w["weather"]) for i, w in split["test"].items() if w["weather_pos"] == corner]
        commonest = Counter(k for _, k in train).most_common(1)[0][0]
        chance = float(np.mean([k == commonest for _, k in test]))
        for slot in range(codes.shape[1]):
            kinds_of = defaultdict(Counter)
            for c, k in train:
                kinds_of[c[slot]][k] += 1
            guess = [kinds_of[c[slot]].most_common(1)[0][0] if kinds_of[c[slot]] else commonest for c, _ in test]
            by_kind = [Counter(c[slot] for c, k in train if k == kind) for kind in WEATHERS]
            weights = np.array([sum(b.values()) for b in by_kind], dtype=float) / len(train)
            rows.append(
                {
                    "corner": corner,
                    "slot": slot,
                    "kind_from_code": float(np.mean([g == k for g, (_, k) in zip(guess, test, strict=True)])),
                    "chance": chance,
                    "entropy": entropy(Counter(c[slot] for c, _ in train)),
                    "entropy_given_kind": float(sum(w * entropy(b) for w, b in zip(weights, by_kind, strict=True))),
                    "n_train": len(train),
                    "n_test": len(test),
                }
            )
    table = pd.DataFrame(rows)
    table["nats_from_kind"] = table["entropy"] - table["entropy_given_kind"]
    table.round(4).to_csv(HERE / "icon_codes.csv", index=False)
    best = table.sort_values("kind_from_code", ascending=False).groupby("corner").head(3)
    print(best.sort_values(["corner", "kind_from_code"], ascending=[True, False]).round(3).to_string(index=False))


if __name__ == "__main__":
    main(*sys.argv[1:3])
