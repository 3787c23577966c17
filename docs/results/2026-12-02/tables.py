"""The markdown tables of README.md from the CSVs beside this script, with each prompted attribute's majority
baseline (what a generator that always draws the commonest value would score) from the dense world's test prompts.

    python docs/results/2026-12-02/tables.py
"""

from pathlib import Path

import pandas as pd

from models.evaluate import PROMPT_TO_READER
from models.reader import labels_of
from tasks.records import load_dataset
from tasks.world import Watch

HERE = Path(__file__).parent


def majority(dataset: str = "runs/dense/data") -> dict[str, float]:
    rows = []
    for rec in load_dataset(dataset).test:
        if rec["task"] != "generation":
            continue
        labels = labels_of(Watch.from_dict(rec["watch"]))
        for prompted in rec["conversations"][0]["attributes"]:
            rows += [{"attribute": head, "value": labels[head]} for head in PROMPT_TO_READER[prompted]]
    counts = pd.DataFrame(rows).groupby("attribute")["value"].value_counts(normalize=True)
    return counts.groupby(level=0).max().to_dict()


def ci(row, col: str) -> str:
    return f"{row[col]:.3f} [{row[col + '_lo']:.3f}, {row[col + '_hi']:.3f}]"


if __name__ == "__main__":
    reliance = pd.read_csv(HERE / "prompt_reliance_summary.csv")
    print("| model | checkpoint | loss, own prompt | loss, another's | gain |\n|---|---|---|---|---|")
    for _, r in reliance.iterrows():
        print(f"| {r.model} | {r.checkpoint} | {r.true:.3f} | {r.swapped:.3f} | {ci(r, 'gain')} |")
    gen = pd.read_csv(HERE / "generation_summary.csv")
    base = majority()
    heads = ["weather", "weather_pos", "battery_pos", "battery_decile", "hour", "minute5"]
    print("\n| model | guidance | " + " | ".join(heads) + " |\n|---|---|" + "---|" * len(heads))
    print("| majority baseline | | " + " | ".join(f"{base[h]:.3f}" for h in heads) + " |")
    for (model, scale), part in gen.groupby(["model", "guidance"], sort=False):
        cells = {r.attribute: ci(r, "correct") for _, r in part.iterrows()}
        print(f"| {model} | {scale:g} | " + " | ".join(cells.get(h, "") for h in heads) + " |")
