"""Does any attention head find the weather icon? For weather-position questions on training images: the share of
each head's attention to the image that lands on the icon's 2 x 2 corner tokens, and on the same-row tokens of the
opposite corner (its column mirror), from the position that decides the row (first answer token) and the one that
decides the column ("-"). Uniform attention gives 4 / 64 = 0.0625 to each. Appends to icon_attention.csv.

    python docs/results/2026-11-22/recipe_search/icon_attention.py CHECKPOINT [N_RECORDS]
"""

import sys

import pandas as pd
import torch
from _common import batches, corner_tokens, load, save_rows

from models.sequence import UND_IMAGE

ckpt, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300
built, dataset, und, gen, enc = load(ckpt)
model = built.model
model.base_llm.config._attn_implementation = "eager"  # only eager attention returns its weights
side = round(und.num_tokens**0.5)


def mirror(corner: str) -> str:
    row, col = corner.split("-")
    return f"{row}-{'right' if col == 'left' else 'left'}"


records = [r for r in dataset.train if r["task"] == "vqa"][:n]
sums: dict[tuple, list[float]] = {}
with torch.no_grad():
    for chunk, seqs, batch in batches(records, 8, enc, und, gen):
        out = model.decoder(
            inputs_embeds=model.embed(batch), attention_mask=batch.attention_mask.long(), output_attentions=True
        )
        for b, (s, r) in enumerate(zip(seqs, chunk, strict=True)):
            image = (batch.kind[b] == UND_IMAGE).nonzero()[:, 0]
            corner = r["watch"]["weather_pos"]
            for start, end, attribute in s.answers:
                if attribute != "weather_pos":
                    continue
                for where, pos in (("row_token", start - 1), ("column_token", end - 3)):
                    for layer, att in enumerate(out.attentions):
                        to_image = att[b, :, pos, image]  # (heads, 64)
                        total = to_image.sum(-1).clamp(min=1e-12)
                        icon = to_image[:, corner_tokens(corner, side)].sum(-1) / total
                        other = to_image[:, corner_tokens(mirror(corner), side)].sum(-1) / total
                        for head in range(att.shape[1]):
                            key = (where, layer, head)
                            sums.setdefault(key, []).append((icon[head].item(), other[head].item(), total[head].item()))
rows = [
    {
        "checkpoint": ckpt,
        "position": where,
        "block": layer,
        "head": head,
        "icon_share": sum(v[0] for v in vals) / len(vals),
        "mirror_share": sum(v[1] for v in vals) / len(vals),
        "attention_to_image": sum(v[2] for v in vals) / len(vals),
        "uniform_share": 4 / und.num_tokens,
        "n": len(vals),
    }
    for (where, layer, head), vals in sorted(sums.items())
]
save_rows("icon_attention.csv", ckpt, rows)
show = pd.DataFrame(rows).sort_values("icon_share", ascending=False).head(8)
print(
    show[["position", "block", "head", "icon_share", "mirror_share", "attention_to_image"]]
    .round(3)
    .to_string(index=False)
)
