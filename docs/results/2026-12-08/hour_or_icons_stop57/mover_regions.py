"""Which tokens the one-token movers read: per model, question and block-1 head (and block 0 head 2), the share of
the answer position's image attention that lands on the weather icon's and the battery's tokens, against their
share of the image's tokens (what an even head would give them). `unilens attend`'s run_attention per question and
region (its files under OUT.csv's folder, attend_QUESTION_REGION/), reduced to that share.
Usage: python mover_regions.py OUT.csv NAME=RUN ... (200 training records per question)."""

import sys
from pathlib import Path

import pandas as pd

from analyses.attention_layers import run_attention

out, models = Path(sys.argv[1]), dict(arg.split("=", 1) for arg in sys.argv[2:])
parts = []
for question in ("time", "weather"):
    for region in ("weather_region", "battery_region"):
        folder = out.parent / f"attend_{question}_{region}"
        run_attention(models, folder, question, region, split="train", limit=200, log=lambda *_: None)
        parts.append(pd.read_csv(folder / "attention_rows.csv"))
rows = pd.concat(parts)
rows["region_share_of_image"] = rows["to_region"] / rows["to_image"].clip(lower=1e-9)
table = (
    rows.groupby(["model", "question", "region", "layer", "head"])[["to_image", "region_share_of_image", "even_share"]]
    .mean()
    .reset_index()
)
table.to_csv(out, index=False)
movers = table[(table["layer"] == 1) | ((table["layer"] == 0) & (table["head"] == 2))]
print(movers.round(3).to_string(index=False))
