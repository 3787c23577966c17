"""How the answer's position looks at the image, per model, question, block and head: the attention mass from the
answer's position ("prompt_end" of the turn asking the question) to the image's tokens, and how that mass is spread
over them (entropy of the renormalised image attention over log(64): 1 = even over all 64 tokens, 0 = one token).
Usage: python answer_attention_spread.py OUT.csv NAME=RUN_OR_CHECKPOINT ... (200 training records per question)."""

import sys

import numpy as np
import pandas as pd
import torch

from models.build import build_spaces, load_checkpoint
from models.evaluate import last_checkpoints
from models.sequence import TAG, Encoder
from probes.attention import _answer_batches
from probes.hooks import HookedVLM
from tasks.records import load_dataset

out, models = sys.argv[1], dict(arg.split("=", 1) for arg in sys.argv[2:])
rows = []
for name, ckpt in last_checkpoints(models).items():
    built, manifest = load_checkpoint(ckpt)
    dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
    und, gen = build_spaces(built, built.model.cfg, dataset, manifest["config"]["cache_dir"])
    encoder = Encoder(built.tokenizer, und.num_tokens)
    hooked = HookedVLM(built.model)
    for question in ("time", "weather"):
        with torch.no_grad():
            for part, batch, answer_at in _answer_batches(dataset.train, und, gen, encoder, question, 16, 200, "cpu"):
                patterns = hooked.run_with_patterns(batch)
                image = batch.tags == TAG["image"]
                rows_of = torch.arange(len(part))
                for site, pattern in patterns.items():
                    at_answer = pattern.float()[rows_of, :, answer_at]  # (batch, heads, keys)
                    to_image = at_answer[image[:, None, :].expand_as(at_answer)].view(len(part), at_answer.shape[1], -1)
                    mass = to_image.sum(-1)
                    p = to_image / mass[..., None].clamp(min=1e-12)
                    spread = -(p * p.clamp(min=1e-12).log()).sum(-1) / np.log(p.shape[-1])
                    for head in range(at_answer.shape[1]):
                        rows.append(
                            {
                                "model": name,
                                "question": question,
                                "layer": int(site.split(".")[1]),
                                "head": head,
                                "to_image": float(mass[:, head].mean()),
                                "spread": float(spread[:, head].mean()),
                                "top_token": float(p[:, head].max(-1).values.mean()),
                                "n": len(part),
                            }
                        )
table = pd.DataFrame(rows)
table = (
    table.groupby(["model", "question", "layer", "head"])
    .apply(lambda g: pd.Series({c: np.average(g[c], weights=g["n"]) for c in ("to_image", "spread", "top_token")}))
    .reset_index()
)
table.to_csv(out, index=False)
print(table.round(3).to_string(index=False))
