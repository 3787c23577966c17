"""Layer x model table of probes.csv (understanding context): mean held-out accuracy over seeds x folds with a
bootstrap CI over those 15 fold scores (folds share images across seeds, so the CI is narrower than independent
replicates would give). Run from the repository root; writes summary.csv beside this file."""

from pathlib import Path

import pandas as pd

from analyses.plots import mean_ci

here = Path(__file__).parent
d = pd.read_csv(here / "probes.csv")
d = d[d.context == "understand"]
rows = []
for (model, group, attribute, layer), x in d.groupby(["model", "group", "attribute", "layer"]):
    mean, lo, hi = mean_ci(x["score"].to_numpy())
    rows.append(
        {
            "model": model,
            "group": group,
            "attribute": attribute,
            "layer": layer,
            "accuracy": round(mean, 3),
            "lo": round(lo, 3),
            "hi": round(hi, 3),
            "majority": round(x["majority"].mean(), 3),
            "control_task": round(x["control"].mean(), 3),
            "n_examples": int(x["n_examples"].iloc[0]),
        }
    )
table = pd.DataFrame(rows)
table.to_csv(here / "summary.csv", index=False)
print(table.to_string(index=False))
