"""Free generation of one checkpoint, read back by the attribute reader (VQ outputs): per prompted attribute with
bootstrap CIs, plus the grid PNG. The generation half of `unilens eval`, for runs that have no understanding data.

    python docs/results/2026-12-02/generation_only.py CHECKPOINT NAME [READER]
"""

import sys
from pathlib import Path

import torch

from models.build import load_checkpoint
from models.evaluate import EvalConfig, Evaluator, FeatureProbes
from models.reader import load_reader
from tasks.records import load_dataset
from tasks.scoring import summarize

torch.set_num_threads(2)
ckpt, name = sys.argv[1], sys.argv[2]
reader = load_reader(sys.argv[3] if len(sys.argv) > 3 else "runs/embedded/reader")
built, manifest = load_checkpoint(ckpt)
dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
ev = Evaluator(built, dataset, manifest["config"]["cache_dir"], EvalConfig())
probes = FeatureProbes(ev.gen_space, dataset) if ev.gen_space.kind == "semantic" else None
table, generated = ev.generation(reader, probes)
here = Path(__file__).parent
table.assign(model=name).to_csv(here / f"generation_{name}.csv", index=False)
ev.grid(generated, here / f"grid_{name}.png", 8)
print(summarize(table, ["attribute"], ("correct",)).to_string())
