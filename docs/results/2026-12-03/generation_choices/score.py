"""Generation's multiple choice (`Evaluator.prompt_choices`) on checkpoints, without the rest of `unilens eval`:
each test prompt asked again with every other value of one named attribute, the true image scored under each.
Writes `NAME_summary.csv` (per attribute and value: `choice` and `margin` with bootstrap CIs over images) beside
this script, and with ROWS_DIR the per-candidate rows (`NAME_choices.csv`, one row per image x attribute x candidate).

    python docs/results/2026-12-03/generation_choices/score.py NAME CHECKPOINT... [--rows ROWS_DIR]
"""

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from models.build import load_checkpoint
from models.evaluate import EvalConfig, Evaluator, summary_table
from tasks.records import load_dataset
from unilens.io import atomic_write_text

HERE = Path(__file__).parent

if __name__ == "__main__":
    torch.set_num_threads(2)
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--rows", default="")
    args = parser.parse_args()
    name, ckpts = args.name, args.checkpoints
    tables, summaries = [], []
    for ckpt in ckpts:
        start = time.time()
        built, manifest = load_checkpoint(ckpt)
        dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
        ev = Evaluator(built, dataset, manifest["config"]["cache_dir"], EvalConfig())
        table = ev.prompt_choices()
        tags = {"model": name, "checkpoint": Path(ckpt).name, "step": manifest["step"]}
        summary = summary_table(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), 1000, gen_choices=table)
        tables.append(table.assign(**tags))
        summaries.append(summary.assign(**tags))
        whole = summary[summary["value"] == "all"]
        print(f"{name} {Path(ckpt).name} ({time.time() - start:.0f} s)")
        print(whole[["attribute", "metric", "mean", "lo", "hi", "n"]].to_string(index=False))
    if args.rows:
        Path(args.rows).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.rows) / f"{name}_choices.csv", pd.concat(tables).to_csv(index=False))
    atomic_write_text(HERE / f"{name}_summary.csv", pd.concat(summaries).to_csv(index=False))
