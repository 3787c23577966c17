"""Generation's multiple choice (`Evaluator.prompt_choices`) on checkpoints, without the rest of `unilens eval`:
each test prompt asked again with every other value of one named attribute, the true image scored under each.
Writes `NAME_summary.csv` (per attribute and value: `choice` and `margin` with bootstrap CIs over images) beside
this script, `NAME_slots.csv` (the margin per token slot, by attribute and by the corner the image shows it in:
where in the image each word's worth sits), and with ROWS_DIR the per-candidate rows (`NAME_choices.csv`, one row
per image x attribute x candidate).

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
CORNER_OF = {"weather": "weather_pos", "weather_pos": "weather_pos", "battery_pos": "battery_pos"}


def slot_margins(table: pd.DataFrame, dataset) -> pd.DataFrame:
    """Per attribute x corner x slot: the mean over questions of the wrong candidates' mean token loss minus the
    true candidate's, at that slot."""
    losses = table[[c for c in table if c.startswith("token_")]].to_numpy()
    watch = {r["image"]: r["watch"] for r in dataset.test}
    rows = []
    for (image, attribute), idx in table.groupby(["image", "attribute"]).indices.items():
        part = table.iloc[idx]
        true = (part["candidate"] == part["value"]).to_numpy()
        margin = losses[idx][~true].mean(0) - losses[idx][true][0]
        corner = watch[image][CORNER_OF[attribute]] if attribute in CORNER_OF else "any"
        rows += [{"attribute": attribute, "corner": corner, "slot": k, "margin": m} for k, m in enumerate(margin)]
    per = pd.DataFrame(rows)
    return per.groupby(["attribute", "corner", "slot"], as_index=False).agg(
        margin=("margin", "mean"), n=("margin", "size")
    )


if __name__ == "__main__":
    torch.set_num_threads(2)
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--rows", default="")
    args = parser.parse_args()
    name, ckpts = args.name, args.checkpoints
    tables, summaries, slots = [], [], []
    for ckpt in ckpts:
        start = time.time()
        built, manifest = load_checkpoint(ckpt)
        dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
        ev = Evaluator(built, dataset, manifest["config"]["cache_dir"], EvalConfig())
        table = ev.prompt_choices(token_losses=True)
        slots.append(slot_margins(table, dataset).assign(model=name, checkpoint=Path(ckpt).name))
        tags = {"model": name, "checkpoint": Path(ckpt).name, "step": manifest["step"]}
        summary = summary_table(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), 1000, gen_choices=table)
        tables.append(table[[c for c in table if not c.startswith("token_")]].assign(**tags))
        summaries.append(summary.assign(**tags))
        whole = summary[summary["value"] == "all"]
        print(f"{name} {Path(ckpt).name} ({time.time() - start:.0f} s)")
        print(whole[["attribute", "metric", "mean", "lo", "hi", "n"]].to_string(index=False))
        top = slots[-1].sort_values("margin", ascending=False).groupby(["attribute", "corner"]).head(3)
        columns = ["attribute", "corner", "slot", "margin", "n"]
        print(top.sort_values(["attribute", "corner"])[columns].to_string(index=False))
    if args.rows:
        Path(args.rows).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.rows) / f"{name}_choices.csv", pd.concat(tables).to_csv(index=False))
    atomic_write_text(HERE / f"{name}_summary.csv", pd.concat(summaries).to_csv(index=False))
    atomic_write_text(HERE / f"{name}_slots.csv", pd.concat(slots).round(6).to_csv(index=False))
