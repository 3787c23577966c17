"""Train a unified model from a config with every batch holding one kind of question: step k draws its records from
the k-th attribute in turn (a seeded permutation per attribute), instead of a slice of one permutation of all the
records. Needs one question per record (filtered_dataset.py --split). The control "do mixed batches keep the
unified model from learning what single-question readers learn?".

    python docs/results/2026-11-22/recipe_search/grouped_batches.py CONFIG
"""

import sys

import numpy as np

import models.train as train
from unilens.config import load_config

cfg = load_config(train.TrainConfig, sys.argv[1])
trainer = train.Trainer(cfg)
attributes = [s.answers[0][2] for s in trainer.sequences]
if any(len(s.answers) != 1 for s in trainer.sequences):
    sys.exit("grouped batches need one question per record: make the dataset with filtered_dataset.py --split")
kinds = sorted(set(attributes))
pools = {k: np.flatnonzero(np.array(attributes) == k) for k in kinds}


def grouped_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    kind = kinds[step % len(kinds)]
    pool = pools[kind]
    turn = step // len(kinds)  # this kind's batch number
    start, out = turn * batch_size, []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), len(pool))
        perm = np.random.default_rng([seed, kinds.index(kind), epoch]).permutation(len(pool))
        out.extend(pool[perm[offset : offset + batch_size - len(out)]])
    return np.array(out)


train.batch_indices = grouped_indices
print(trainer.train())
