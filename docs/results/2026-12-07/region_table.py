"""Markdown table of layer-wise probe scores (mean [corrected t 95% CI] over seeds x folds) from probes.csv files.

usage: python docs/results/2026-12-07/region_table.py ATTRIBUTE PROBES_CSV...
"""

import sys

import pandas as pd

from analyses.plots import by_layer

LAYERS = (-1, 0, 1, 3, 5)  # -1: the adapter's output

attribute, paths = sys.argv[1], sys.argv[2:]
d = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
d = d[d["attribute"] == attribute]
n_folds = int(d["fold"].nunique())
table = by_layer(d, "score", ["model", "group"], n_folds=n_folds, bounds=(0.0, 1.0))
print(f"| model | positions | {' | '.join('adapter' if k < 0 else f'block {k}' for k in LAYERS)} |")
print("|---|---|" + "---|" * len(LAYERS))
for (model, group), g in table.groupby(["model", "group"], sort=False):
    g = g.set_index("layer")
    cells = [
        f"{g.loc[k, 'mean']:.3f} [{g.loc[k, 'lo']:.2f}, {g.loc[k, 'hi']:.2f}]" if k in g.index else "-" for k in LAYERS
    ]
    print(f"| {model} | {group} | {' | '.join(cells)} |")
print(f"majority {d['majority'].mean():.3f}; shuffled labels {d['shuffled'].mean():.3f}")
