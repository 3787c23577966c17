"""Does generation follow its prompt? `Evaluator.prompt_reliance` on checkpoints: the teacher-forced image loss under
each image's own prompt and under another record's, summarised per checkpoint (with bootstrap CIs over images) into
`prompt_reliance_summary.csv` and per token slot into `prompt_reliance_slots.csv` beside this script (rows of the
same name are replaced).

    python docs/results/2026-12-02/prompt_reliance.py NAME CHECKPOINT...
"""

import sys
from pathlib import Path

import pandas as pd
import torch

from models.build import load_checkpoint
from models.evaluate import EvalConfig, Evaluator, prompt_gain
from tasks.records import load_dataset
from tasks.scoring import summarize

HERE = Path(__file__).parent


def summaries(table: pd.DataFrame, name: str, checkpoint: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_image = prompt_gain(table).assign(attribute="image")
    summary = summarize(per_image, ["attribute"], ("true", "swapped", "gain")).drop(columns="attribute")
    slots = table.pivot_table(index="slot", columns="condition", values="image_loss").reset_index()
    slots["gain"] = slots["swapped"] - slots["true"]
    tags = {"model": name, "checkpoint": checkpoint}
    return summary.assign(**tags), slots[["slot", "true", "swapped", "gain"]].assign(**tags)


def save(rows: pd.DataFrame, file: str, name: str) -> None:
    path = HERE / file
    if path.is_file():
        old = pd.read_csv(path)
        rows = pd.concat([old[old["model"] != name], rows], ignore_index=True)
    rows.to_csv(path, index=False)


if __name__ == "__main__":
    torch.set_num_threads(2)
    name, ckpts = sys.argv[1], sys.argv[2:]
    parts = []
    for ckpt in ckpts:
        built, manifest = load_checkpoint(ckpt)
        dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
        ev = Evaluator(built, dataset, manifest["config"]["cache_dir"], EvalConfig())
        parts.append(summaries(ev.prompt_reliance(), name, Path(ckpt).name))
        print(parts[-1][0].to_string())
    save(pd.concat([p[0] for p in parts]), "prompt_reliance_summary.csv", name)
    save(pd.concat([p[1] for p in parts]), "prompt_reliance_slots.csv", name)
