"""Teacher-forced loss of each token of the true answer, averaged per attribute and token index, on the first N
test images: which token of an answer does the model get wrong? Appends tidy rows to answer_token_loss.csv.

    python docs/results/2026-11-22/recipe_search/answer_token_loss.py CHECKPOINT [N]
"""

import sys
from collections import defaultdict

import pandas as pd
import torch
import torch.nn.functional as F
from _common import batches, load, save_rows

ckpt, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100
built, dataset, und, gen, enc = load(ckpt)
records = [r for r in dataset.test if r["task"] == "vqa"][:n]
losses = defaultdict(list)
with torch.no_grad():
    for _chunk, seqs, batch in batches(records, 16, enc, und, gen):
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
save_rows("answer_token_loss.csv", ckpt, rows)
print(pd.DataFrame(rows).query("attribute != 'time' and attribute != 'battery'").round(3).to_string(index=False))
