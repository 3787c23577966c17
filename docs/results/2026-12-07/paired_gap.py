"""The difference between two runs' image gaps, paired per question: for every test question both evals asked
(same image, attribute and turn), run A's gap minus run B's, with a 95% bootstrap CI resampling images as `unilens
eval` does (so A's and B's own rows match their summary.csv). Why: each run's own CI carries the spread of the
questions' difficulty, which pairing cancels. Since stop 50 this is `unilens compare` with one run per arm, printed
for one attribute's image gap.

    python docs/results/2026-12-07/paired_gap.py ATTRIBUTE A_EVAL_FOLDER B_EVAL_FOLDER
"""

import sys

from analyses.compare import compare_evals


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    attribute, folder_a, folder_b = argv
    table = compare_evals([folder_a], [folder_b], tasks=["image_gap"])
    rows = table[table["attribute"] == attribute]
    if rows.empty:
        raise SystemExit(f"no {attribute} question in both evals")
    for row in rows.itertuples():
        print(
            f"{attribute} image gap {row.arm}: {row.mean:.3f} [{row.lo:.3f}, {row.hi:.3f}] nats, "
            f"{row.n_questions} questions"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
