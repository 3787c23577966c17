"""Paired difference of two `unilens eval` folders (same test set, same checkpoint step): understanding by multiple
choice (weather, corners) and by greedy answers (battery soft, hour), generation read back and generation's
multiple choice. Each cell: mean of (B - A) per question with a 95% bootstrap CI over questions, and B's and A's
own means.

python docs/results/2026-12-04/mixed_icon/paired.py EVAL_A EVAL_B [STEP]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from models.evaluate import choice_predictions
from tasks.scoring import bootstrap_ci

QUESTION = ["image", "attribute", "turn"]
ATTRIBUTES = ("weather", "weather_pos", "battery_pos")


def per_question(folder: Path, step: int | None) -> dict[str, pd.DataFrame]:
    """(name -> rows with QUESTION and a 0/1 or soft `score`) for one eval folder at one step."""

    def at(table: pd.DataFrame) -> pd.DataFrame:
        chosen = table["step"].max() if step is None else step
        return table[table["step"] == chosen]

    def scored(table: pd.DataFrame, attribute: str, column: str) -> pd.DataFrame:
        rows = table[table["attribute"] == attribute]
        return rows[QUESTION].assign(score=rows[column])

    und_choices = choice_predictions(at(pd.read_csv(folder / "choices.csv")))
    vqa = at(pd.read_csv(folder / "vqa.csv"))
    gen = at(pd.read_csv(folder / "generation.csv")).assign(turn=0)
    gen_choices = choice_predictions(at(pd.read_csv(folder / "generation_choices.csv")))
    out = {f"und. {a} (choice)": scored(und_choices, a, "choice") for a in ATTRIBUTES}
    out["und. battery (soft)"] = scored(vqa, "battery", "soft")
    out["und. hour"] = scored(vqa, "time", "hour")
    out |= {f"gen. {a} (read back)": scored(gen, a, "correct") for a in ATTRIBUTES}
    out |= {f"gen. {a} (choice)": scored(gen_choices, a, "choice") for a in ATTRIBUTES}
    return out


def main() -> None:
    a_dir, b_dir = Path(sys.argv[1]), Path(sys.argv[2])
    step = int(sys.argv[3]) if len(sys.argv) > 3 else None
    a, b = per_question(a_dir, step), per_question(b_dir, step)
    print(f"A = {a_dir.name}, B = {b_dir.name}, step {step or 'last'}")
    print("| measure | A | B | B - A (paired) | n |")
    print("|---|---|---|---|---|")
    for name in a:
        both = a[name].merge(b[name], on=QUESTION, suffixes=("_a", "_b"), validate="one_to_one").dropna()
        mean, lo, hi = bootstrap_ci((both["score_b"] - both["score_a"]).to_numpy())
        print(
            f"| {name} | {both['score_a'].mean():.3f} | {both['score_b'].mean():.3f} | "
            f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] | {len(both)} |"
        )


if __name__ == "__main__":
    main()
