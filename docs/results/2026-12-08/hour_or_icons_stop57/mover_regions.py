"""Which tokens the one-token movers read: per model, question and block-1 head (and block 0 head 2), the share of
the answer position's image attention that lands on the weather icon's and the battery's tokens, against their
share of the image's tokens (what an even head would give them). Usage: python mover_regions.py OUT.csv NAME=RUN ...
(200 training records per question)."""

import sys

import pandas as pd

from models.build import build_spaces, load_checkpoint
from models.evaluate import last_checkpoints
from models.sequence import Encoder
from probes.attention import answer_attention
from tasks.records import load_dataset

out, models = sys.argv[1], dict(arg.split("=", 1) for arg in sys.argv[2:])
parts = []
for name, ckpt in last_checkpoints(models).items():
    built, manifest = load_checkpoint(ckpt)
    dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
    und, gen = build_spaces(built, built.model.cfg, dataset, manifest["config"]["cache_dir"])
    encoder = Encoder(built.tokenizer, und.num_tokens)
    for question in ("time", "weather"):
        for region in ("weather_region", "battery_region"):
            rows = answer_attention(built.model, dataset.train, und, gen, encoder, question, region, limit=200)
            parts.append(rows.assign(model=name))
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
