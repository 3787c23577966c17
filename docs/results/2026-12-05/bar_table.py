"""Print the issue-4 bar's figures from `unilens eval` summary.csv files: understanding (multiple choice for weather
and corners, greedy battery soft and hour), generation read back (with the input-blind baseline and the ceiling).

    python docs/results/2026-12-05/bar_table.py LABEL=EVAL_FOLDER [LABEL=EVAL_FOLDER ...]
"""

import sys

import pandas as pd

from analyses.plots import eval_baselines

ROWS = [
    ("vqa_choice", "weather", "choice", "und weather"),
    ("vqa_choice", "weather_pos", "choice", "und weather corner"),
    ("vqa_choice", "battery_pos", "choice", "und battery corner"),
    ("vqa", "battery", "soft", "und battery soft"),
    ("vqa", "time", "hour", "und hour"),
    ("vqa", "time", "soft", "und time soft"),
    ("generation", "weather", "correct", "gen weather kind"),
    ("generation", "weather_pos", "correct", "gen weather corner"),
    ("generation", "battery_pos", "correct", "gen battery corner"),
    ("generation_choice", "weather", "choice", "gen choice weather"),
]
# greedy answers' input-blind levels, as the earlier write-ups give them: a uniform guess of the hour; the soft
# battery score of a constant "50%"; the soft time score of a guess
FIXED = {"und hour": 1 / 12, "und battery soft": 0.75, "und time soft": 0.5}


def table(label: str, folder: str) -> pd.DataFrame:
    summary = pd.read_csv(f"{folder}/summary.csv")
    every = summary[summary["value"] == "all"]
    base = eval_baselines(summary).set_index(["task", "attribute"])["baseline"]
    rows = []
    for step, d in every.groupby("step"):
        for task, attribute, metric, name in ROWS:
            hit = d[(d["task"] == task) & (d["attribute"] == attribute) & (d["metric"] == metric)]
            if hit.empty:
                continue
            r = hit.iloc[0]
            ceiling = d[(d["task"] == task) & (d["attribute"] == attribute) & (d["metric"] == "ceiling")]
            rows.append(
                {
                    "run": label,
                    "step": step,
                    "measure": name,
                    "score": f"{r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]",
                    "baseline": f"{FIXED.get(name, base.get((task, attribute), float('nan'))):.3f}",
                    "ceiling": f"{ceiling.iloc[0]['mean']:.3f}" if len(ceiling) else "",
                    "n": int(r["n"]),
                }
            )
    return pd.DataFrame(rows)


if __name__ == "__main__":
    frames = [table(*arg.split("=", 1)) for arg in sys.argv[1:]]
    out = pd.concat(frames)
    print("| " + " | ".join(out.columns) + " |")
    print("|" + "---|" * len(out.columns))
    for row in out.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in row) + " |")
