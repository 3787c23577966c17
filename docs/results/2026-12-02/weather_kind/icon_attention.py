"""Does the answer position look at the icon when asked what the weather is, as when asked where the icon is? For each
test image, one first-turn question of each kind; from the answer position (the last prompt token), per block and
head: the attention sent to the image, and the share of that on the icon's 2 x 2 corner tokens (uniform: 4 / 64).

    python docs/results/2026-12-02/weather_kind/icon_attention.py CHECKPOINT OUT.csv
"""

from __future__ import annotations

import sys

import pandas as pd
import torch
from where_lost import corner_slots, weather_prompt

from models.build import build_spaces, load_checkpoint
from models.generate import collate_prompts
from models.sequence import UND_IMAGE, Encoder
from models.unified import grid_side, positions
from tasks.records import load_dataset

QUESTIONS = {"weather": "What is the current weather?", "weather_pos": "In which corner is the weather icon?"}


@torch.no_grad()
def main() -> None:
    checkpoint, out = sys.argv[1], sys.argv[2]
    built, manifest = load_checkpoint(checkpoint)
    model = built.model.eval()
    model.base_llm.config._attn_implementation = "eager"  # only eager attention returns its weights
    dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
    und_space, gen_space = build_spaces(built, model.cfg, dataset, manifest["config"]["cache_dir"])
    enc = Encoder(built.tokenizer, und_space.num_tokens)
    side = grid_side(und_space.num_tokens, "the weather corner")
    records = [r for r in dataset.test if r["task"] == "vqa"]
    rows = []
    for attribute, text in QUESTIONS.items():
        for start in range(0, len(records), 50):
            chunk = records[start : start + 50]
            batch = collate_prompts(
                [weather_prompt(enc, r, text, attribute) for r in chunk], und_space, gen_space, enc.pad_id
            )
            mask = batch.attention_mask.long()
            att = model.decoder(
                inputs_embeds=model.embed(batch),
                attention_mask=mask,
                position_ids=positions(mask),
                output_attentions=True,
            ).attentions
            for b, record in enumerate(chunk):
                image = (batch.kind[b] == UND_IMAGE).nonzero()[:, 0]
                icon = image[corner_slots(record["watch"]["weather_pos"], side)]
                for layer, a in enumerate(att):
                    last = a[b, :, -1]  # (heads, L) from the answer position
                    to_image = last[:, image].sum(-1)
                    share = last[:, icon].sum(-1) / to_image.clamp(min=1e-12)
                    for head in range(last.shape[0]):
                        rows.append(
                            {
                                "question": attribute,
                                "block": layer,
                                "head": head,
                                "image": record["image"],
                                "to_image": to_image[head].item(),
                                "icon_share": share[head].item(),
                            }
                        )
    table = pd.DataFrame(rows)
    summary = table.groupby(["question", "block", "head"])[["to_image", "icon_share"]].mean().reset_index()
    summary = summary.assign(uniform_share=4 / und_space.num_tokens, n=len(records), checkpoint=checkpoint)
    summary.to_csv(out, index=False)
    wide = summary.pivot_table(index=["block", "head"], columns="question", values=["to_image", "icon_share"])
    print(wide.round(3).to_string())


if __name__ == "__main__":
    main()
