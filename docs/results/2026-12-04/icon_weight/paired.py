"""Paired difference of two runs' generation read-back on the same test prompts: per step and attribute, the mean of
(run B correct - run A correct) with a 95% bootstrap CI over prompts, from their `generation.csv`.

python docs/results/2026-12-04/icon_weight/paired.py A_generation.csv B_generation.csv
"""

from __future__ import annotations

import sys

import pandas as pd

from tasks.scoring import bootstrap_ci

ATTRIBUTES = ["weather", "weather_pos", "battery_pos"]


def main() -> None:
    a, b = (pd.read_csv(p) for p in sys.argv[1:3])
    keys = ["image", "attribute", "step"]
    both = a[[*keys, "correct"]].merge(b[[*keys, "correct"]], on=keys, suffixes=("_a", "_b"), validate="one_to_one")
    print("| step | " + " | ".join(f"{x}: B - A" for x in ATTRIBUTES) + " |")
    print("|---" * (len(ATTRIBUTES) + 1) + "|")
    for step, d in both.groupby("step"):
        cells = []
        for attribute in ATTRIBUTES:
            rows = d[d["attribute"] == attribute]
            mean, lo, hi = bootstrap_ci((rows["correct_b"] - rows["correct_a"]).to_numpy())
            cells.append(f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] (n {len(rows)})")
        print(f"| {step} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
