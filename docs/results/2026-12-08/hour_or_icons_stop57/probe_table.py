"""The stop-57 probe table: per attribute, position group, model and site, the mean over 5 folds with the corrected
t interval, the shuffled-label control and the majority rate. Usage: python probe_table.py probes.csv"""

import sys

import pandas as pd

from analyses.plots import cv_mean_ci

df = pd.read_csv(sys.argv[1])
rows = []
for (attribute, group, model, site, layer), g in df.groupby(["attribute", "group", "model", "site", "layer"]):
    mean, lo, hi = cv_mean_ci(g["score"].to_numpy(), n_folds=5, bounds=(0, 1))
    rows.append(
        {
            "attribute": attribute,
            "group": group,
            "model": model,
            "site": site,
            "layer": layer,
            "score": f"{mean:.3f} [{lo:.2f}, {hi:.2f}]",
            "shuffled": round(g["shuffled"].mean(), 3),
            "majority": round(g["majority"].mean(), 3),
        }
    )
table = pd.DataFrame(rows).sort_values(["attribute", "group", "model", "layer"])
print("| " + " | ".join(table.columns) + " |")
print("|" + "---|" * len(table.columns))
for row in table.itertuples(index=False):
    print("| " + " | ".join(str(v) for v in row) + " |")
