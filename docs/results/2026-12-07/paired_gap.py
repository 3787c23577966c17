"""The difference between two runs' image gaps, paired per question: for every test question both evals asked
(same image, attribute and turn), run A's gap minus run B's, with a 95% bootstrap CI resampling images as `unilens
eval` does (so A's and B's own rows match their summary.csv). Why: each run's own CI carries the spread of the
questions' difficulty, which pairing cancels.

    python docs/results/2026-12-07/paired_gap.py ATTRIBUTE A_EVAL_FOLDER B_EVAL_FOLDER
"""

import sys

import pandas as pd

from models.evaluate import image_gap
from tasks.scoring import bootstrap_ci


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    attribute, folder_a, folder_b = argv
    keys = ["image", "attribute", "turn"]
    gaps = []
    for folder in (folder_a, folder_b):
        reliance = pd.read_csv(f"{folder}/image_reliance.csv")
        if reliance["step"].nunique() > 1:
            raise SystemExit(f"{folder}: more than one checkpoint; evaluate with --checkpoints last")
        gaps.append(image_gap(reliance[reliance["attribute"] == attribute]).set_index(keys)["gap"])
    both = pd.concat(gaps, axis=1, keys=["a", "b"], join="inner")
    if both.empty:
        raise SystemExit(f"no {attribute} question in both evals")
    for name, values in (("A", both["a"]), ("B", both["b"]), ("A - B", both["a"] - both["b"])):
        mean, lo, hi = bootstrap_ci(values.to_numpy(), values.index.get_level_values("image"))
        print(f"{attribute} image gap {name}: {mean:.3f} [{lo:.3f}, {hi:.3f}] nats, {len(values)} questions")


if __name__ == "__main__":
    main(sys.argv[1:])
