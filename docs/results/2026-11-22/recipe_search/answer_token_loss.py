"""Teacher-forced loss of each token of the true answer, averaged per attribute and token index, on the first N
test images: which token of an answer does the model get wrong? Appends tidy rows to answer_token_loss.csv.

    python docs/results/2026-11-22/recipe_search/answer_token_loss.py CHECKPOINT [N]
"""

import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from models.build import build_spaces, load_checkpoint
from models.sequence import Encoder, collate
from tasks.records import load_dataset

torch.set_num_threads(1)
ckpt, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100
built, manifest = load_checkpoint(ckpt)
dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
und, gen = build_spaces(built, built.model.cfg, dataset, manifest["config"]["cache_dir"])
enc = Encoder(built.tokenizer, und.num_tokens)
records = [r for r in dataset.test if r["task"] == "vqa"][:n]
losses = defaultdict(list)
with torch.no_grad():
    for i in range(0, len(records), 16):
        seqs = [enc.record(r) for r in records[i : i + 16]]
        batch = collate(seqs, und, gen, enc.pad_id)
        logp = F.log_softmax(built.model.text_logits(built.model.hidden(batch)).float(), -1)
        for b, s in enumerate(seqs):
            for start, end, attribute in s.answers:
                for k, pos in enumerate(range(start - 1, end - 1)):
                    token = s.ids[pos + 1]
                    name = built.tokenizer.convert_ids_to_tokens(token) if attribute.endswith("pos") else ""
                    losses[(attribute, k, name)].append(-logp[b, pos, token].item())
rows = [
    {"checkpoint": ckpt, "attribute": a, "token_index": k, "token": t, "nll": sum(v) / len(v), "n": len(v)}
    for (a, k, t), v in sorted(losses.items())
]
out = Path(__file__).with_name("answer_token_loss.csv")
table = pd.DataFrame(rows)
if out.is_file():
    old = pd.read_csv(out, keep_default_na=False)
    table = pd.concat([old[old.checkpoint != ckpt], table], ignore_index=True)
table.to_csv(out, index=False)
print(pd.DataFrame(rows).query("attribute != 'time' and attribute != 'battery'").round(3).to_string(index=False))
