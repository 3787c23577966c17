"""Where is an icon's column (left / right) in a model? Linear probes (logistic, 5-fold) for the weather icon's
column on the training images' weather-position questions, at every block's residual stream: at the position that
predicts the answer's first token (the row), at the "-" that predicts left / right, and averaged over the image
positions; also on the image tokens averaged before (raw) and after the input adapter. Appends to column_probe.csv.

    python docs/results/2026-11-22/recipe_search/column_probe.py CHECKPOINT [N_RECORDS]
"""

import sys

import numpy as np
import pandas as pd
import torch
from _common import batches, load, save_rows
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from models.sequence import UND_IMAGE

ckpt, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 700
built, dataset, und, gen, enc = load(ckpt)
model = built.model
records = [r for r in dataset.train if r["task"] == "vqa"][:n]
feats = {k: [] for k in ("row_token", "column_token", "image_mean", "adapter_mean", "raw_mean")}
labels = []
with torch.no_grad():
    for chunk, seqs, batch in batches(records, 16, enc, und, gen):
        out = model.decoder(
            inputs_embeds=model.embed(batch), attention_mask=batch.attention_mask.long(), output_hidden_states=True
        )
        hs = torch.stack(out.hidden_states[1:], 1)  # (B, blocks, L, d)
        for b, (s, r) in enumerate(zip(seqs, chunk, strict=True)):
            for start, end, attribute in s.answers:
                if attribute != "weather_pos":
                    continue
                raw = und.inputs(r["image"])
                feats["row_token"].append(hs[b, :, start - 1].numpy())
                feats["column_token"].append(hs[b, :, end - 3].numpy())  # "-": the next token is left / right
                feats["image_mean"].append(hs[b][:, batch.kind[b] == UND_IMAGE].mean(1).numpy())
                feats["raw_mean"].append(raw.mean(0)[None].numpy())
                feats["adapter_mean"].append(model.und_embed(raw).mean(0)[None].numpy())
                labels.append(r["watch"]["weather_pos"].split("-")[1])
y = np.array(labels)
majority = max(np.mean(y == v) for v in set(y))
rows = []
for site, x in feats.items():
    x = np.stack(x)
    for block in range(x.shape[1]):
        probe = LogisticRegression(max_iter=2000, C=0.1)
        acc = cross_val_score(probe, x[:, block], y, cv=5).mean()
        rows.append(
            {
                "checkpoint": ckpt,
                "site": site,
                "block": block if x.shape[1] > 1 else -1,
                "accuracy": acc,
                "majority": majority,
                "n": len(y),
            }
        )
save_rows("column_probe.csv", ckpt, rows)
print(pd.DataFrame(rows).pivot(index="site", columns="block", values="accuracy").round(2).to_string())
