"""Understanding scores split by whether a turn repeats an earlier turn's question, recomputed from an evaluation's
per-answer tables (vqa.csv, choices.csv) with the library's summary (`models.evaluate.summary_table`).

usage: python docs/results/2026-12-07/repeat_table.py LABEL=EVAL_FOLDER [LABEL=EVAL_FOLDER ...]
"""

import sys

import pandas as pd

from models.evaluate import summary_table

ROWS = [("vqa_choice", "choice", a) for a in ("weather", "weather_pos", "battery_pos")]
ROWS += [("vqa", "soft", "battery"), ("vqa", "hour", "time")]
SPLITS = ("", "_first_turn", "_later_turns", "_new_questions", "_repeated_questions")

print("| run | answer | " + " | ".join(s.strip("_").replace("_", " ") or "every turn" for s in SPLITS) + " |")
print("|---|---|" + "---|" * len(SPLITS))
for arg in sys.argv[1:]:
    label, folder = arg.split("=", 1)
    vqa, choices = pd.read_csv(f"{folder}/vqa.csv"), pd.read_csv(f"{folder}/choices.csv")
    last = vqa["step"].max()
    vqa, choices = vqa[vqa["step"] == last], choices[choices["step"] == last]
    empty = pd.DataFrame()
    s = summary_table(vqa, empty, empty, n_boot=1000, choices=choices)
    s = s[s["value"] == "all"].set_index(["task", "attribute", "metric"])
    for task, metric, attribute in ROWS:
        cells = []
        for split in SPLITS:
            key = (task + split, attribute, metric)
            cells.append(
                f"{s.loc[key, 'mean']:.3f} [{s.loc[key, 'lo']:.2f}, {s.loc[key, 'hi']:.2f}] (n={s.loc[key, 'n']})"
                if key in s.index
                else "-"
            )
        print(f"| {label} | {attribute} {metric} | {' | '.join(cells)} |")
