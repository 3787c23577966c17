"""Is a semantic generation's layout set by its first row of tokens? For each checkpoint: generate the test prompts
(as `unilens eval` does), read each prompted corner from the whole generation (the eval's feature probes, all 64
slots) and from its first row alone (a ridge classifier on slots 0-7 of the true training features), and count how
often the two readings agree. Why: the true features' first row already holds the weather icon's corner at 0.885 and
the battery's at 0.975 (layout_in_first_tokens.csv), so a generation may commit to a layout before it reaches the
corner it draws.

    python docs/results/2026-12-06/gen_first/teacher_forced/layout_at_first_row.py OUT.csv LABEL=CHECKPOINT ...
"""

import sys

import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeClassifier

from models.build import load_checkpoint
from models.evaluate import EvalConfig, Evaluator, FeatureProbes
from models.reader import labels_of
from tasks.records import load_dataset
from tasks.world import Watch

FIRST_ROW = slice(0, 8)
CORNERS = ("weather_pos", "battery_pos")


def row_reader(space, dataset, attribute: str):
    watches = {r["image"]: r["watch"] for r in dataset.train}
    x = np.stack([space.inputs(i).numpy()[FIRST_ROW].reshape(-1) for i in watches]).astype(np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-6
    y = [labels_of(Watch.from_dict(w))[attribute] for w in watches.values()]
    ridge = RidgeClassifier(alpha=10.0).fit((x - mean) / std, y)
    return lambda f: ridge.predict((f[:, FIRST_ROW].reshape(len(f), -1).astype(np.float64) - mean) / std)


def main(out: str, *models: str) -> None:
    rows = []
    for spec in models:
        label, ckpt = spec.split("=", 1)
        built, manifest = load_checkpoint(ckpt)
        dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
        ev = Evaluator(built, dataset, manifest["config"]["cache_dir"], EvalConfig())
        table, generated = ev.generation(None, FeatureProbes(ev.gen_space, dataset))
        tokens = generated["tokens"].numpy()
        for attribute in CORNERS:
            first_row = row_reader(ev.gen_space, dataset, attribute)(tokens)
            whole = generated["read"][attribute]
            for i, record in enumerate(generated["records"]):
                if attribute not in record["conversations"][0]["attributes"]:
                    continue
                truth = labels_of(Watch.from_dict(record["watch"]))[attribute]
                rows.append(
                    {
                        "model": label,
                        "attribute": attribute,
                        "image": record["image"],
                        "whole_correct": float(whole[i] == truth),
                        "first_row_correct": float(first_row[i] == truth),
                        "agree": float(whole[i] == first_row[i]),
                    }
                )
    table = pd.DataFrame(rows)
    table.to_csv(out, index=False)
    summary = table.groupby(["model", "attribute"])[["whole_correct", "first_row_correct", "agree"]].mean()
    print(summary.assign(n=table.groupby(["model", "attribute"]).size()).round(3).to_string())


if __name__ == "__main__":
    main(*sys.argv[1:])
