"""Print the time-only tables from the copied `unilens eval` summaries and the readout CSV in this folder.

python docs/results/2026-12-03/time_only/tables.py
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
# the weather control is control_*_summary.csv
RUNS = ("sem-sem-lora", "sem-sem-full", "sem-sem-lora-30ep", "sem-sem-lora-linear", "vq-vq-lora")


def cell(rows: pd.DataFrame) -> str:
    if rows.empty:
        return ""
    r = rows.iloc[0]
    return f"{r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"


def main() -> None:
    print("| run | step | hour (greedy, chance 0.083) | time soft (chance 0.5) | first-turn hour | image gap (nats) |")
    print("|---|---|---|---|---|---|")
    for run in RUNS:
        path = HERE / f"{run}_summary.csv"
        if not path.is_file():
            continue
        s = pd.read_csv(path)
        s = s[(s["attribute"] == "time") & (s["value"] == "all")]
        for step in sorted(s["step"].unique()):
            at = s[s["step"] == step]

            def pick(task: str, metric: str, at: pd.DataFrame = at) -> str:
                return cell(at[(at["task"] == task) & (at["metric"] == metric)])

            print(
                f"| {run} | {step} | {pick('vqa', 'hour')} | {pick('vqa', 'soft')} | "
                f"{pick('vqa_first_turn', 'hour')} | {pick('image_gap', 'gap')} |"
            )
    readout = HERE / "readout_semantic.csv"
    if readout.is_file():
        r = pd.read_csv(readout)
        print()
        print("| reader | steps x batch 64 | hour, test (per seed) | train |")
        print("|---|---|---|---|")
        for (name, steps), g in r.groupby(["reader", "steps"], sort=False):
            per_seed = zip(g["test"], g["lo"], g["hi"], strict=True)
            seeds = ", ".join(f"{t:.3f} [{lo:.3f}, {hi:.3f}]" for t, lo, hi in per_seed)
            print(f"| {name} | {steps} | {seeds} | {g['train'].mean():.3f} |")


if __name__ == "__main__":
    main()
