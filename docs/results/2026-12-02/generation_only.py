"""Free generation of one checkpoint, read back by the attribute reader (VQ outputs) or by linear probes on
ground-truth features (semantic outputs): per prompted attribute with bootstrap CIs, at each guidance scale, into
`generation_summary.csv` beside this script (rows of the same name replaced), plus a grid PNG per scale. The
generation half of `unilens eval`, for runs that have no understanding data.

    python docs/results/2026-12-02/generation_only.py CHECKPOINT NAME [--guidance 1 3 ...]
"""

import argparse
from pathlib import Path

import pandas as pd
import torch

from models.build import load_checkpoint
from models.evaluate import EvalConfig, Evaluator, FeatureProbes
from models.reader import load_reader
from tasks.records import load_dataset
from tasks.scoring import summarize

HERE = Path(__file__).parent

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
parser.add_argument("name")
parser.add_argument("--guidance", type=float, nargs="+", default=[1.0])
parser.add_argument("--reader", default="runs/embedded/reader")
args = parser.parse_args()
torch.set_num_threads(2)
reader = load_reader(args.reader)
built, manifest = load_checkpoint(args.checkpoint)
dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
parts = []
for scale in args.guidance:
    ev = Evaluator(built, dataset, manifest["config"]["cache_dir"], EvalConfig(guidance=scale))
    probes = FeatureProbes(ev.gen_space, dataset) if ev.gen_space.kind == "semantic" else None
    table, generated = ev.generation(reader, probes)
    ev.grid(generated, HERE / f"grid_{args.name}_guidance-{scale:g}.png", 8)
    summary = summarize(table, ["attribute"], ("correct",))
    parts.append(summary.assign(model=args.name, checkpoint=Path(args.checkpoint).name, guidance=scale))
    print(parts[-1].to_string())
rows = pd.concat(parts, ignore_index=True)
path = HERE / "generation_summary.csv"
if path.is_file():
    old = pd.read_csv(path)
    rows = pd.concat([old[old["model"] != args.name], rows], ignore_index=True)
rows.to_csv(path, index=False)
