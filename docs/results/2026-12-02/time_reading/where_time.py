"""Where is the time lost? Layer-wise linear probes for the hour and the minute, at the image and at the answer.

Every model so far reads the time at chance (soft score about 0.5), though a reader trained on the VQ tokenizer's
reconstructions reads the hour at 0.72: the codes carry it. Each image gets one question, "What time does the watch
show?", with its true answer teacher-forced ("HH:MM:SS", one token per digit). The residual stream after every block
is cached, and a logistic regression is fitted on N training images and scored on the 200 test images (95% bootstrap
CI over test images):
  image-mean  the image tokens averaged;
  image-all   the image tokens concatenated, reduced to 128 principal components fitted on the training images;
  H1, H2      the positions whose next token is the hour's first / second digit (probe target: the hour, mod 12);
  M1, M2      the same for the minute's digits (probe target: the minute's five-minute bin).
Site "codes" is what the input adapter receives, "adapter" its output plus the slot vectors. The model's own
teacher-forced accuracy on each digit is reported beside it (hour digits, minute digits), on both splits.

    python docs/results/2026-12-02/time_reading/where_time.py CHECKPOINT OUT.csv [--n 1200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "weather_kind"))
from where_lost import load_for_probes, weather_prompt

from models.generate import collate_prompts
from models.sequence import TAG, Encoder
from probes.hooks import HookedVLM, resid_name
from tasks.scoring import bootstrap_ci

QUESTION = "What time does the watch show?"
# Offsets from the sequence's end of the positions whose next token is each answer digit: the answer "HH:MM:SS"
# is 8 tokens plus </s>, so the last prompt token (next: H1) sits 10 from the end.
DIGIT_OFFSETS = {"H1": -10, "H2": -9, "M1": -7, "M2": -6}
TARGET_OF = {"H1": "hour", "H2": "hour", "M1": "minute_bin", "M2": "minute_bin"}


def time_sequence(encoder: Encoder, record: dict):
    prompt = weather_prompt(encoder, record, QUESTION, "time")
    full = dict(
        image=record["image"],
        task="vqa",
        conversations=[
            {"from": "human", "value": f"<image>\n{QUESTION}", "attribute": "time"},
            {"from": "gpt", "value": "{hour:02d}:{minute:02d}:{second:02d}".format(**record["watch"])},
        ],
    )
    seq = encoder.record(full, with_answers=True)
    assert len(seq) == len(prompt) + 9, "the answer must be eight single-digit tokens and </s>"
    return seq


@torch.no_grad()
def features(model, records, enc, und_space, gen_space):
    """(site, where) -> (N, features), and the teacher-forced digit hits (N, 4)."""
    hooked = HookedVLM(model)
    names = [resid_name(layer) for layer in range(hooked.n_layers)]
    feats: dict[tuple[str, str], list[np.ndarray]] = {}
    hits: list[np.ndarray] = []
    seqs = [time_sequence(enc, r) for r in records]
    for start in range(0, len(seqs), 64):
        chunk = seqs[start : start + 64]
        batch = collate_prompts(chunk, und_space, gen_space, enc.pad_id)
        assert (batch.ids != enc.pad_id).any(1).all()
        h, cache = hooked.run_with_cache_embeds(model.embed(batch), batch, names)
        positions = list(DIGIT_OFFSETS.values())
        predicted = model.text_logits(h[:, positions]).argmax(-1)
        wanted = batch.ids[:, [p + 1 for p in positions]]
        hits.append((predicted == wanted).float().numpy())
        image = batch.tags == TAG["image"]
        b = len(chunk)
        emb = model.with_slots(model.und_embed(batch.und_inputs), "und").reshape(b, -1, model.d_model)
        raw = batch.und_inputs.reshape(b, und_space.num_tokens, -1)
        image_sites = {
            "codes": raw,
            "adapter": emb,
            **{n: cache[n][image].reshape(b, -1, model.d_model) for n in names},
        }
        for site, x in image_sites.items():
            feats.setdefault((site, "image-mean"), []).append(x.mean(1).float().numpy())
            feats.setdefault((site, "image-all"), []).append(x.reshape(b, -1).float().numpy())
            if site in names:
                for where, p in DIGIT_OFFSETS.items():
                    feats.setdefault((site, where), []).append(cache[site][:, p].float().numpy())
    return {k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(hits)


def probe(where: str, n_features: int):
    steps = [StandardScaler()]
    if where == "image-all":
        steps.append(PCA(n_components=min(128, n_features), random_state=0))
    return make_pipeline(*steps, LogisticRegression(max_iter=3000, C=0.1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=1200)
    args = ap.parse_args()
    model, enc, und_space, gen_space, split = load_for_probes(args.checkpoint, args.n)
    y = {
        k: {
            "hour": np.array([r["watch"]["hour"] % 12 for r in v]),
            "minute_bin": np.array([r["watch"]["minute"] // 5 for r in v]),
        }
        for k, v in split.items()
    }
    X, hits = {}, {}
    for k, records in split.items():
        X[k], hits[k] = features(model, records, enc, und_space, gen_space)
    rows = []
    for site, where in X["train"]:
        targets = [TARGET_OF[where]] if where in TARGET_OF else ["hour", "minute_bin"]
        for target in targets:
            clf = probe(where, X["train"][site, where].shape[1])
            clf.fit(X["train"][site, where], y["train"][target])
            correct = (clf.predict(X["test"][site, where]) == y["test"][target]).astype(float)
            _, lo, hi = bootstrap_ci(correct, n_boot=2000)
            rows.append(
                {
                    "site": site,
                    "where": where,
                    "target": target,
                    "probe_test_accuracy": correct.mean(),
                    "low": lo,
                    "high": hi,
                    "majority": float(pd.Series(y["test"][target]).value_counts(normalize=True).max()),
                }
            )
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    for k in split:
        for j, digit in enumerate(DIGIT_OFFSETS):
            _, lo, hi = bootstrap_ci(hits[k][:, j], n_boot=2000)
            table[f"model_{k}_{digit}"] = hits[k][:, j].mean()
            table[f"model_{k}_{digit}_ci"] = f"[{lo:.3f}, {hi:.3f}]"
    table = table.assign(n_train=len(split["train"]), n_test=len(split["test"]), checkpoint=args.checkpoint)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    cols = ["site", "where", "target", "probe_test_accuracy", "low", "high"]
    print(table[cols].round(3).to_string(index=False))
    print(table.filter(like="model_").iloc[0].to_string())


if __name__ == "__main__":
    main()
