"""Which readout of the semantic tokens can learn the hour? A learnability check beside the time-only runs.

The embedded LLM does not learn to name the hour from 40000 time questions (README here). The semantic tokens do
carry it: a linear map over all 64 tokens reads it. The question is which *kind* of reader can learn it by
gradient descent from these 4000 training images, because the LLM can only read its image by attention, and
attention starts near uniform: what it first sees is close to the tokens' average. Four readers, each trained
with Adam on the hour (mod 12, cross-entropy), scored on the 200 test images (95% bootstrap CI):
  linear-all       one weight per token and channel (the probe's reader; position is built in)
  mean-mlp         an MLP on each token, then the average: no position at all
  mean-mlp-slot    the same with a learned slot vector added to each token before the MLP
  attention-slot   one attention layer (4 heads, a learned query) over the tokens plus slot vectors

    python docs/results/2026-12-03/time_only/readout.py FEATURES.npy DATASET OUT.csv \
        [--steps 1500] [--seeds 3] [--readers a,b]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from tasks.scoring import bootstrap_ci


class LinearAll(nn.Module):
    def __init__(self, t: int, d: int):
        super().__init__()
        self.head = nn.Linear(t * d, 12)

    def forward(self, x):
        return self.head(x.flatten(1))


class MeanMLP(nn.Module):
    def __init__(self, t: int, d: int, slot: bool, width: int = 256):
        super().__init__()
        self.slot = nn.Parameter(torch.randn(t, d) * 0.02) if slot else None
        self.mlp = nn.Sequential(nn.Linear(d, width), nn.GELU(), nn.Linear(width, width))
        self.head = nn.Linear(width, 12)

    def forward(self, x):
        if self.slot is not None:
            x = x + self.slot
        return self.head(self.mlp(x).mean(1))


class AttentionSlot(nn.Module):
    def __init__(self, t: int, d: int, width: int = 256, heads: int = 4):
        super().__init__()
        self.inp = nn.Linear(d, width)
        self.slot = nn.Parameter(torch.randn(t, width) * 0.02)
        self.query = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.head = nn.Linear(width, 12)

    def forward(self, x):
        h = self.inp(x) + self.slot
        out, _ = self.attn(self.query.expand(len(x), -1, -1), h, h)
        return self.head(out[:, 0])


READERS = {
    "linear-all": lambda t, d: LinearAll(t, d),
    "mean-mlp": lambda t, d: MeanMLP(t, d, slot=False),
    "mean-mlp-slot": lambda t, d: MeanMLP(t, d, slot=True),
    "attention-slot": lambda t, d: AttentionSlot(t, d),
}


def load(features: str, dataset: str):
    rows = [json.loads(line) for line in open(Path(dataset) / "images.jsonl")]
    x = torch.from_numpy(np.load(features).astype(np.float32))
    x = (x - x.mean((0, 1))) / (x.std((0, 1)) + 1e-6)
    hour = torch.tensor([r["watch"]["hour"] % 12 for r in rows])
    test = torch.tensor([r["role"] == "test" for r in rows])
    return x[~test], hour[~test], x[test], hour[test]


def train(reader: nn.Module, x, y, steps: int, seed: int, batch: int = 64, lr: float = 1e-3) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(reader.parameters(), lr=lr, weight_decay=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        loss = nn.functional.cross_entropy(reader(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return reader


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("features")
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--readers", default=",".join(READERS), help="comma-separated subset of " + ", ".join(READERS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = load(args.features, args.dataset)
    t, d = xtr.shape[1], xtr.shape[2]
    rows = []
    for name in args.readers.split(","):
        make = READERS[name]
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            reader = train(make(t, d), xtr, ytr, args.steps, seed)
            with torch.no_grad():
                correct = (reader(xte).argmax(-1) == yte).float().numpy()
                train_acc = (reader(xtr[:1000]).argmax(-1) == ytr[:1000]).float().mean().item()
            mean, lo, hi = bootstrap_ci(correct, n_boot=2000)
            rows.append(dict(reader=name, seed=seed, steps=args.steps, test=mean, lo=lo, hi=hi, train=train_acc))
            print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
