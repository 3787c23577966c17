"""Print the curriculum tables from the copied `unilens eval` summaries in this folder.

after-time_summary.csv   configs/train/dense/vq-vq-lora-heavy-answer-after-time.yaml (time-only stage first)
fresh_summary.csv        configs/train/dense/vq-vq-lora-heavy-answer.yaml (fresh adapters) retrained here to 50%
../vq-vq-lora-heavy-answer_summary.csv   the same fresh run to the end (first part; identical at 1312 and 2188)

python docs/results/2026-12-03/curriculum/tables.py
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analyses.plots import eval_baselines

HERE = Path(__file__).parent
RUNS = {
    "after time": HERE / "after-time_summary.csv",
    "fresh": HERE / "fresh_summary.csv",
    "fresh, first part": HERE.parent / "vq-vq-lora-heavy-answer_summary.csv",
}
UNDERSTANDING = [
    ("hour", "vqa", "time", "hour"),
    ("hour, first turn", "vqa_first_turn", "time", "hour"),
    ("time (soft)", "vqa", "time", "soft"),
    ("time image gap (nats)", "image_gap", "time", "gap"),
    ("weather", "vqa_choice", "weather", "choice"),
    ("weather corner", "vqa_choice", "weather_pos", "choice"),
    ("battery corner", "vqa_choice", "battery_pos", "choice"),
    ("battery (soft)", "vqa", "battery", "soft"),
]
GENERATION = ["weather", "weather_pos", "battery_pos", "battery_decile", "hour", "minute5"]


def cell(d: pd.DataFrame, task: str, attribute: str, metric: str, step: int) -> str:
    r = d[(d["task"] == task) & (d["attribute"] == attribute) & (d["metric"] == metric) & (d["step"] == step)]
    if r.empty:
        return ""
    r = r.iloc[0]
    return f"{r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"


def main() -> None:
    found = {name: pd.read_csv(path) for name, path in RUNS.items() if path.is_file()}
    print("| run | step | " + " | ".join(name for name, *_ in UNDERSTANDING) + " |")
    print("|---" * (len(UNDERSTANDING) + 2) + "|")
    for name, summary in found.items():
        whole = summary[summary["value"] == "all"]
        for step in sorted(whole["step"].unique()):
            row = [cell(whole, t, a, m, step) for _, t, a, m in UNDERSTANDING]
            print(f"| {name} | {step} | " + " | ".join(row) + " |")
    print()
    print("| run | step | " + " | ".join(GENERATION) + " | prompt gain (nats/token) |")
    print("|---" * (len(GENERATION) + 3) + "|")
    for name, summary in found.items():
        whole = summary[summary["value"] == "all"]
        gen = whole[whole["task"] == "generation"]
        for step in sorted(gen["step"].unique()):
            row = [cell(whole, "generation", a, "correct", step) for a in GENERATION]
            gain = cell(whole, "prompt_reliance", "image", "gain", step)
            print(f"| {name} | {step} | " + " | ".join(row) + f" | {gain} |")
    if "after time" in found:
        summary = found["after time"]
        gen = summary[(summary["task"] == "generation") & (summary["value"] == "all")]
        if not gen.empty:
            last = gen["step"].max()
            ceiling = [cell(summary[summary["value"] == "all"], "generation", a, "ceiling", last) for a in GENERATION]
            base = eval_baselines(summary)
            base = base[base["task"] == "generation"].set_index("attribute")["baseline"]
            print("| ceiling | | " + " | ".join(c.split(" ")[0] for c in ceiling) + " | |")
            print(
                "| commonest prompted value | | "
                + " | ".join(f"{base.get(a, float('nan')):.3f}" for a in GENERATION)
                + " | |"
            )


if __name__ == "__main__":
    main()
