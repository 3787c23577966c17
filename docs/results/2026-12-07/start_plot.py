"""Draw the question "does a generation-trained start help vq-sem read the dial?" from `unilens eval` summary.csv
files: the time's image gap (nats the answer gains from the image) and the hour's accuracy on every turn and on
the first, with their 95% bootstrap CIs, one bar per run; writes the tidy rows beside the figure.

    python docs/results/2026-12-07/start_plot.py OUT_STEM LABEL=SUMMARY_CSV [LABEL=SUMMARY_CSV ...]
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

PANELS = [
    ("image_gap", "time", "gap", "time image gap (nats)", 0.0, "no image use"),
    ("vqa", "time", "hour", "hour, every turn (accuracy)", 1 / 12, "chance 1/12"),
    ("vqa_first_turn", "time", "hour", "hour, first turn (accuracy)", 1 / 12, "chance 1/12"),
]


def rows(label: str, path: str) -> pd.DataFrame:
    summary = pd.read_csv(path)
    picked = []
    for task, attribute, metric, *_ in PANELS:
        hit = summary[
            (summary["task"] == task)
            & (summary["attribute"] == attribute)
            & (summary["metric"] == metric)
            & (summary["value"].astype(str) == "all")
        ]
        if hit.empty:
            raise SystemExit(f"{path}: no {task}/{attribute}/{metric} row; was it written by `unilens eval`?")
        picked.append(hit.sort_values("step").iloc[[-1]])
    out = pd.concat(picked)
    out.insert(0, "run", label)
    return out


def main(argv: list[str]) -> None:
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        raise SystemExit(__doc__)
    stem = Path(argv[0])
    table = pd.concat([rows(*a.split("=", 1)) for a in argv[1:]], ignore_index=True)
    table.to_csv(stem.with_suffix(".csv"), index=False)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4))
    for ax, (task, _attribute, metric, name, floor, floor_name) in zip(axes, PANELS, strict=True):
        d = table[(table["task"] == task) & (table["metric"] == metric)]
        x = range(len(d))
        ax.bar(x, d["mean"], color="tab:blue", alpha=0.7)
        ax.errorbar(x, d["mean"], yerr=[d["mean"] - d["lo"], d["hi"] - d["mean"]], fmt="none", color="black")
        ax.axhline(floor, color="grey", linestyle="--", label=floor_name)
        ax.set_xticks(list(x), d["run"], rotation=20, ha="right")
        ax.set_ylabel(name)
        ax.legend(loc="upper left")
    fig.suptitle("Does a generation-trained start help vq-sem read the dial? (95% bootstrap CIs over test images)")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    print(table[["run", "task", "metric", "mean", "lo", "hi", "n", "step"]].to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1:])
