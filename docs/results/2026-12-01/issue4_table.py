"""The issue-4 bar as one table: per evaluated run, understanding (multiple choice and greedy, every turn and the
first turn) and generation read back, each with its 95% bootstrap CI and n, from the runs' eval/summary.csv.

    python docs/results/2026-12-01/issue4_table.py runs/dense/*/eval/summary.csv > docs/results/2026-12-01/issue4.md
"""

import sys

import pandas as pd

ROWS = [
    ("vqa_choice", "choice", ("weather", "weather_pos", "battery_pos")),
    ("vqa_choice_first_turn", "choice", ("weather", "weather_pos", "battery_pos")),
    ("vqa", "exact", ("weather", "weather_pos", "battery_pos", "battery", "time")),
    ("vqa", "soft", ("battery", "time")),
    ("vqa_first_turn", "exact", ("weather", "weather_pos", "battery_pos")),
    ("generation", "correct", ("weather", "weather_pos", "battery_pos", "battery_decile", "hour", "minute5")),
    ("generation", "cosine", ("all",)),
    ("caption", "recall", ("caption",)),
    ("caption", "precision", ("caption",)),
]


def cell(row) -> str:
    return f"{row['mean']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}] (n={int(row['n'])})"


def main(paths: list[str]) -> None:
    tables = []
    for path in paths:
        s = pd.read_csv(path)
        s = s[(s["value"] == "all") & (s["step"] == s["step"].max())]
        run = f"{s['variant'].iloc[0]} {s['preset'].iloc[0]} {s['mixture'].iloc[0]} step {s['step'].iloc[0]}"
        out = []
        for task, metric, attributes in ROWS:
            for attribute in attributes:
                hit = s[(s["task"] == task) & (s["metric"] == metric) & (s["attribute"] == attribute)]
                if len(hit):
                    out.append({"score": f"{task} {metric}", "attribute": attribute, run: cell(hit.iloc[0])})
        tables.append(pd.DataFrame(out).set_index(["score", "attribute"]))
    table = pd.concat(tables, axis=1).fillna("").reset_index()
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
