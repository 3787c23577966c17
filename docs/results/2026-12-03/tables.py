"""Print the tables of an `unilens eval` summary (default: this folder's vq-vq-lora-heavy-answer_summary.csv).

python docs/results/2026-12-03/tables.py [SUMMARY.csv]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from analyses.plots import eval_baselines

HERE = Path(__file__).parent


def cell(d: pd.DataFrame, task: str, attribute: str, metric: str, step: int) -> str:
    r = d[(d["task"] == task) & (d["attribute"] == attribute) & (d["metric"] == metric) & (d["step"] == step)]
    if r.empty:
        return ""
    r = r.iloc[0]
    return f"{r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "vq-vq-lora-heavy-answer_summary.csv"
    summary = pd.read_csv(path)
    whole = summary[summary["value"] == "all"]
    steps = sorted(whole["step"].unique())
    understanding = [
        ("weather", "vqa_choice", "weather", "choice"),
        ("weather corner", "vqa_choice", "weather_pos", "choice"),
        ("battery corner", "vqa_choice", "battery_pos", "choice"),
        ("battery (soft)", "vqa", "battery", "soft"),
        ("time (soft)", "vqa", "time", "soft"),
        ("hour (greedy)", "vqa", "time", "hour"),
        ("time image gap (nats)", "image_gap", "time", "gap"),
        ("weather, first turn", "vqa_choice_first_turn", "weather", "choice"),
    ]
    print("| step | " + " | ".join(name for name, *_ in understanding) + " |")
    print("|---" * (len(understanding) + 1) + "|")
    for step in steps:
        print(f"| {step} | " + " | ".join(cell(whole, t, a, m, step) for _, t, a, m in understanding) + " |")
    print()
    gen = ["weather", "weather_pos", "battery_pos", "battery_decile", "hour", "minute5"]
    base = eval_baselines(summary)
    base = base[base["task"] == "generation"].set_index("attribute")["baseline"]
    print("| step | " + " | ".join(gen) + " | prompt gain (nats/token) |")
    print("|---" * (len(gen) + 2) + "|")
    for step in steps:
        row = [cell(whole, "generation", a, "correct", step) for a in gen]
        print(f"| {step} | " + " | ".join(row) + f" | {cell(whole, 'prompt_reliance', 'image', 'gain', step)} |")
    ceiling = [cell(whole, "generation", a, "ceiling", steps[-1]).split(" ")[0] for a in gen]
    print("| ceiling | " + " | ".join(ceiling) + " | |")
    print("| commonest prompted value | " + " | ".join(f"{base.get(a, float('nan')):.3f}" for a in gen) + " | |")


if __name__ == "__main__":
    main()
