"""Where is the weather's kind lost? Layer-wise linear probes at the weather icon's tokens and at the answer position.

A model that finds the icon's corner (1.00) but names the icon only 0.64 of the time either never represents the kind
at the icon's tokens, or represents it there and fails to move it to the position that answers. Every image gets one
first-turn question, "What is the current weather?"; the residual stream after every block is cached, and a logistic
regression for the weather kind is fitted on N training images and scored on the 200 test images (95% bootstrap CI
over test images), at two places:
  icon    the image tokens of the icon's 2 x 2 corner, concatenated (where the icon is drawn);
  answer  the last prompt position (the one whose next token is the answer).
Site "codes" is what the input adapter receives at those tokens, "adapter" its output plus the slot vectors. The
model's own answer (argmax among the three words' first tokens) is scored on the same prompts, on both splits: a gap
between them is memorisation.

    python docs/results/2026-12-02/weather_kind/where_lost.py CHECKPOINT OUT.csv [--n 1200]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models.build import build_spaces, load_checkpoint
from models.generate import collate_prompts
from models.sequence import TAG, Encoder
from models.unified import grid_side
from probes.hooks import HookedVLM, resid_name
from tasks.records import load_dataset
from tasks.scoring import bootstrap_ci

KINDS = ["cloudy", "raining", "sunny"]


def corner_slots(corner: str, side: int, k: int = 2) -> list[int]:
    rows = range(k) if corner.startswith("top") else range(side - k, side)
    cols = range(k) if corner.endswith("left") else range(side - k, side)
    return [r * side + c for r in rows for c in cols]


def weather_prompt(
    encoder: Encoder, record: dict, text: str = "What is the current weather?", attribute: str = "weather"
):
    """The record's image with one first-turn question, up to where the answer starts."""
    question = {"from": "human", "value": f"<image>\n{text}", "attribute": attribute}
    one = {"image": record["image"], "task": "vqa", "conversations": [question, {"from": "gpt", "value": ""}]}
    return encoder.record(one, with_answers=False)


@torch.no_grad()
def features(model, records, enc, und_space, gen_space, side):
    """(site, where) -> (N, features), and the model's answers."""
    hooked = HookedVLM(model)
    names = [resid_name(layer) for layer in range(hooked.n_layers)]
    first_ids = [enc.text(k)[0] for k in KINDS]
    assert len(set(first_ids)) == 3, "the three weather words must start with different tokens"
    feats: dict[tuple[str, str], list[np.ndarray]] = {}
    answers: list[str] = []
    prompts = [weather_prompt(enc, r) for r in records]
    for start in range(0, len(prompts), 64):
        chunk = prompts[start : start + 64]
        batch = collate_prompts(chunk, und_space, gen_space, enc.pad_id)
        h, cache = hooked.run_with_cache_embeds(model.embed(batch), batch, names)
        answers += [KINDS[i] for i in model.text_logits(h[:, -1])[:, first_ids].argmax(-1).tolist()]
        image = batch.tags == TAG["image"]
        slots = [corner_slots(r["watch"]["weather_pos"], side) for r in records[start : start + len(chunk)]]
        b = len(chunk)
        emb = model.with_slots(model.und_embed(batch.und_inputs), "und").reshape(b, -1, model.d_model)
        raw = batch.und_inputs.reshape(b, und_space.num_tokens, -1)
        sites = {"codes": raw, "adapter": emb, **{n: cache[n][image].reshape(b, -1, model.d_model) for n in names}}
        for site, x in sites.items():
            icon = torch.stack([x[i, s].reshape(-1) for i, s in enumerate(slots)])
            feats.setdefault((site, "icon"), []).append(icon.float().numpy())
            if site in names:
                feats.setdefault((site, "answer"), []).append(cache[site][:, -1].float().numpy())
    return {k: np.concatenate(v) for k, v in feats.items()}, np.array(answers)


def load_for_probes(checkpoint: str, n_train: int):
    """The checkpoint's model in eval mode, its prompt encoder and spaces, and the VQA records: N train, all test."""
    torch.manual_seed(0)
    built, manifest = load_checkpoint(checkpoint)
    model = built.model.eval()
    dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
    und_space, gen_space = build_spaces(built, model.cfg, dataset, manifest["config"]["cache_dir"])
    enc = Encoder(built.tokenizer, und_space.num_tokens)
    split = {
        "train": [r for r in dataset.train if r["task"] == "vqa"][:n_train],
        "test": [r for r in dataset.test if r["task"] == "vqa"],
    }
    return model, enc, und_space, gen_space, split


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=1200)
    args = ap.parse_args()
    model, enc, und_space, gen_space, split = load_for_probes(args.checkpoint, args.n)
    side = grid_side(und_space.num_tokens, "the weather corner")
    y = {k: np.array([r["watch"]["weather"] for r in v]) for k, v in split.items()}
    X, answers = {}, {}
    for k, records in split.items():
        X[k], answers[k] = features(model, records, enc, und_space, gen_space, side)
    rows = []
    for key in X["train"]:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
        clf.fit(X["train"][key], y["train"])
        correct = (clf.predict(X["test"][key]) == y["test"]).astype(float)
        _, lo, hi = bootstrap_ci(correct, n_boot=2000)
        rows.append({"site": key[0], "where": key[1], "probe_test_accuracy": correct.mean(), "low": lo, "high": hi})
    model_rows = {}
    for k in split:
        correct = (answers[k] == y[k]).astype(float)
        _, lo, hi = bootstrap_ci(correct, n_boot=2000)
        model_rows |= {f"model_{k}_accuracy": correct.mean(), f"model_{k}_low": lo, f"model_{k}_high": hi}
    majority = float(pd.Series(y["test"]).value_counts(normalize=True).max())
    table = pd.DataFrame(rows).assign(
        **model_rows, majority=majority, n_train=len(y["train"]), n_test=len(y["test"]), checkpoint=args.checkpoint
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.drop(columns="checkpoint").round(3).to_string(index=False))


if __name__ == "__main__":
    main()
