"""Generation scores of runs side by side, from their `unilens eval` summaries: read back by the attribute reader
(`correct`, with the commonest prompted value as baseline), generation's multiple choice (`choice`, chance 1/values,
and `margin`, nats per token) and the prompt's gain.

python docs/results/2026-12-04/icon_weight/compare.py NAME=SUMMARY.csv [NAME=SUMMARY.csv ...]
"""

from __future__ import annotations

import sys

import pandas as pd

from analyses.plots import eval_baselines

ATTRIBUTES = ["weather", "weather_pos", "battery_pos"]


def cell(d: pd.DataFrame, task: str, attribute: str, metric: str, digits: int = 3) -> str:
    r = d[(d["task"] == task) & (d["attribute"] == attribute) & (d["metric"] == metric)]
    if r.empty:
        return ""
    r = r.iloc[0]
    return f"{r['mean']:.{digits}f} [{r['lo']:.{digits}f}, {r['hi']:.{digits}f}]"


def main() -> None:
    runs = dict(arg.split("=", 1) for arg in sys.argv[1:])
    head = (
        ["run", "step"]
        + [f"read {a}" for a in ATTRIBUTES]
        + [f"choice {a}" for a in ATTRIBUTES]
        + ["margin weather", "prompt gain"]
    )
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    baselines = None
    for name, path in runs.items():
        summary = pd.read_csv(path)
        baselines = eval_baselines(summary)
        whole = summary[summary["value"] == "all"]
        for step in sorted(whole["step"].unique()):
            d = whole[whole["step"] == step]
            row = [name, str(step)]
            row += [cell(d, "generation", a, "correct") for a in ATTRIBUTES]
            row += [cell(d, "generation_choice", a, "choice") for a in ATTRIBUTES]
            row.append(cell(d, "generation_choice", "weather", "margin", 4))
            row.append(cell(d, "prompt_reliance", "image", "gain", 4))
            print("| " + " | ".join(row) + " |")
    if baselines is not None:
        b = baselines.set_index(["task", "attribute"])["baseline"]
        row = ["baseline", ""] + [f"{b.get(('generation', a), float('nan')):.3f}" for a in ATTRIBUTES]
        row += [f"{b.get(('generation_choice', a), float('nan')):.3f}" for a in ATTRIBUTES] + ["0", "0"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
