"""Does generation data teach the understanding pathway? Image use of the four variants and their controls over
training, from `unilens eval` folders.

Measures per run x step x attribute, each with a 95% bootstrap CI over test images:
  choice     multiple-choice accuracy over every VQA turn (vqa_choice in summary.csv)
  image_gap  the answer's teacher-forced loss with another record's image minus with its own (nats; 0: the model does
             not look at its image), paired per question, from image_reliance.csv
  row, column  for the corners: the share of multiple-choice picks with the right row (top/bottom) and the right
             column (left/right), from choices.csv; 0.5 each is a guess

    python docs/results/2026-12-02/alignment/compare.py OUT_DIR NAME=EVAL_DIR [NAME=EVAL_DIR ...]

Writes OUT_DIR/image_use.csv (one row per run x step x attribute x measure) and OUT_DIR/image_use.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from models.evaluate import choice_predictions
from tasks.scoring import bootstrap_ci

ATTRIBUTES = ["weather", "weather_pos", "battery_pos"]
CORNERS = ["weather_pos", "battery_pos"]
CHANCE = {"weather": 1 / 3, "weather_pos": 1 / 4, "battery_pos": 1 / 4}


def image_use(name: str, folder: Path) -> pd.DataFrame:
    rows = []
    summary = pd.read_csv(folder / "summary.csv")
    choice = summary[(summary["task"] == "vqa_choice") & (summary["value"] == "all")]
    for r in choice[choice["attribute"].isin(ATTRIBUTES)].itertuples():
        rows.append(dict(run=name, step=r.step, attribute=r.attribute, measure="choice", mean=r.mean, lo=r.lo, hi=r.hi))
    picks = pd.read_csv(folder / "choices.csv")
    picks = choice_predictions(picks[picks["attribute"].isin(CORNERS)])
    for half, index in (("row", 0), ("column", 1)):
        picks[half] = (picks["candidate"].str.split("-").str[index] == picks["value"].str.split("-").str[index]) * 1.0
    for (step, attribute), d in picks.groupby(["step", "attribute"]):
        for half in ("row", "column"):
            mean, lo, hi = bootstrap_ci(d[half].to_numpy(), groups=d["image"].to_numpy())
            rows.append(dict(run=name, step=step, attribute=attribute, measure=half, mean=mean, lo=lo, hi=hi))
    rel = pd.read_csv(folder / "image_reliance.csv")
    keys = ["step", "image", "attribute", "turn"]
    paired = rel.pivot_table(index=keys, columns="condition", values="answer_nll").reset_index()
    paired["gap"] = paired["swapped"] - paired["true"]
    for (step, attribute), d in paired[paired["attribute"].isin(ATTRIBUTES)].groupby(["step", "attribute"]):
        mean, lo, hi = bootstrap_ci(d["gap"].to_numpy(), groups=d["image"].to_numpy())
        rows.append(dict(run=name, step=step, attribute=attribute, measure="image_gap", mean=mean, lo=lo, hi=hi))
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, path: Path) -> None:
    panels = (("choice", "accuracy (choice)"), ("image_gap", "NLL(swapped) - NLL(true)"), ("column", "right column"))
    fig, axes = plt.subplots(len(panels), len(ATTRIBUTES), figsize=(4 * len(ATTRIBUTES), 9), sharex=True)
    for j, attribute in enumerate(ATTRIBUTES):
        for i, (measure, label) in enumerate(panels):
            ax = axes[i, j]
            d = table[(table["attribute"] == attribute) & (table["measure"] == measure)]
            if d.empty:
                ax.axis("off")
                continue
            for run, r in d.groupby("run"):
                r = r.sort_values("step")
                ax.plot(r["step"], r["mean"], marker="o", label=run)
                ax.fill_between(r["step"], r["lo"], r["hi"], alpha=0.2)
            chance = {"choice": CHANCE[attribute], "image_gap": 0.0, "column": 0.5}[measure]
            ax.axhline(chance, color="grey", ls="--", lw=1, label="chance")
            ax.set_title(f"{attribute}: {label}")
            if i == len(panels) - 1 or (measure == "image_gap" and attribute == "weather"):
                ax.set_xlabel("optimizer step")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Does generation data teach understanding to read its image? Image use over training, 95% CIs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+", help="NAME=EVAL_DIR")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for spec in args.runs:
        name, _, folder = spec.partition("=")
        parts.append(image_use(name, Path(folder)))
    table = pd.concat(parts, ignore_index=True).sort_values(["measure", "attribute", "run", "step"])
    table.to_csv(out / "image_use.csv", index=False)
    plot(table, out / "image_use.png")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
