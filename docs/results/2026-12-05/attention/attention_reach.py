"""Where do a checkpoint's attention heads look? Per block, the attention mass (mean over heads and positions):
- from answer-predicting positions of VQA records (first turns about the weather, its corner or the battery's) to the
  understanding image's tokens, and how much more of that goes to the asked region's tokens than a uniform look
  would give ("asked region / uniform", 1: no selectivity);
- from generated-image positions to the prompt (every text token before the image but the first) and to the
  previous four image tokens (the neighbours a copying model needs);
- from both to the first real token, where heads with nothing to read park their mass.

Why: the mixed runs with semantic generation went input-blind while their VQ-generation twins did not, and under
teacher forcing a semantic token is 97% predictable from its neighbours (predict/). If semantic generation trains
heads to look only nearby, the answers' heads may lose the image with it.

    .venv/bin/python docs/results/2026-12-05/attention/attention_reach.py DATASET OUT.csv LABEL=CHECKPOINT...
"""

from __future__ import annotations

import sys

import pandas as pd
import torch

from models.build import build_spaces, load_checkpoint
from models.sequence import GEN_IMAGE, TEXT, UND_IMAGE, Encoder, collate
from models.unified import positions
from tasks.records import load_dataset
from tasks.render import region_slots
from tasks.world import Watch

RECORDS = 48


@torch.no_grad()
def attention(model, batch) -> tuple[torch.Tensor, ...]:
    """Per block, (B, heads, L, L) attention probabilities, computed eagerly."""
    model.base_llm.config._attn_implementation = "eager"
    emb = model.embed(batch)
    mask = batch.attention_mask.long()
    out = model.decoder(
        inputs_embeds=emb, attention_mask=mask, position_ids=positions(mask), output_attentions=True, use_cache=False
    )
    return out.attentions


def asked_region(records: list[dict], side: int) -> torch.Tensor:
    """(B, side^2): the slots of the drawn region the first question asks about (weather icon for the weather and
    its corner, battery for its corner)."""
    region = torch.zeros(len(records), side * side, dtype=torch.bool)
    for i, r in enumerate(records):
        drawn = "battery" if r["conversations"][0]["attribute"] == "battery_pos" else "weather"
        region[i, region_slots(Watch.from_dict(r["watch"]), drawn, side)] = True
    return region


def reach(model, tokenizer, dataset, und, gen, task: str) -> list[dict]:
    enc = Encoder(tokenizer, und.num_tokens)
    records = [r for r in dataset.test if r["task"] == task]
    if task == "vqa":  # first turns about a drawn region: the answer needs a few of the image's tokens
        asked = ("weather", "weather_pos", "battery_pos")
        records = [r for r in records if r["conversations"][0]["attribute"] in asked]
    records = records[:RECORDS]
    batch = collate([enc.record(r, max_turns=1) for r in records], und, gen, enc.pad_id)
    rows = []
    for block, probs in enumerate(attention(model, batch)):
        probs = probs.float().mean(1)  # over heads: (B, L, L)
        start = batch.attention_mask.float().argmax(1)  # the first real token: heads park mass there (a sink)
        to_first = probs[torch.arange(len(start)), :, start]
        if task == "vqa":
            at = batch.labels != -100
            image = batch.kind == UND_IMAGE
            to_image = (probs * image[:, None, :]).sum(-1)
            region = torch.zeros_like(image)
            region[image] = asked_region(records, round(und.num_tokens**0.5)).flatten()
            share = region.sum(1, keepdim=True) / image.sum(1, keepdim=True)  # the region's share of the tokens
            selectivity = (probs * region[:, None, :]).sum(-1) / to_image.clamp(min=1e-9) / share
            for to, value in (("first token", to_first), ("image", to_image), ("asked region / uniform", selectivity)):
                rows.append({"block": block, "from": "answer", "to": to, "mass": value[at].mean().item()})
            continue
        at = batch.gen_predict_mask
        first_image = (batch.kind == GEN_IMAGE).float().argmax(1)
        index = torch.arange(batch.kind.shape[1])
        prompt = (batch.kind == TEXT) & (index[None, :] < first_image[:, None]) & (index[None, :] > start[:, None])
        to_prompt = (probs * prompt[:, None, :]).sum(-1)
        to_first = probs[torch.arange(len(start)), :, start]
        near = (index[None, :] <= index[:, None]) & (index[None, :] > index[:, None] - 4)  # self and 3 before
        to_near = (probs * (near[None] & (batch.kind == GEN_IMAGE)[:, None, :])).sum(-1)
        for to, mass in (("first token", to_first), ("prompt", to_prompt), ("4 nearest", to_near)):
            rows.append({"block": block, "from": "generated image", "to": to, "mass": mass[at].mean().item()})
    return rows


if __name__ == "__main__":
    dataset_dir, out, *labelled = sys.argv[1:]
    torch.set_num_threads(2)
    dataset = load_dataset(dataset_dir)
    rows = []
    for item in labelled:
        label, checkpoint = item.split("=", 1)
        built, manifest = load_checkpoint(checkpoint)
        model = built.model.eval()
        und, gen = build_spaces(built, model.cfg, dataset, "runs/cache")
        for task in ("vqa", "generation"):
            for row in reach(model, built.tokenizer, dataset, und, gen, task):
                rows.append({"run": label, "step": manifest["step"], **row})
        print(pd.DataFrame([r for r in rows if r["run"] == label]).to_string(index=False), flush=True)
    pd.DataFrame(rows).to_csv(out, index=False)
