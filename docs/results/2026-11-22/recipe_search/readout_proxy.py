"""How hard is it to read a watch from the semantic features at all? A fresh 2-block transformer (width 128), no
LLM and no text: the 64 feature tokens (standardised as the unified models see them) plus one learned query token
per question, a classifier on the query's output. Trained from scratch on the training images, scored on the test
images every 250 steps, with and without a learned vector per image slot. If this reads the icon's column within a
few hundred steps, the unified models' plateau is the LLM's, not the features'.

Writes readout_proxy.csv.

    python docs/results/2026-11-22/recipe_search/readout_proxy.py
"""

from pathlib import Path

import pandas as pd
import torch
from _common import embedded_features
from torch import nn

torch.set_num_threads(2)
QUESTIONS = {
    "weather": lambda w: w["weather"],
    "weather row": lambda w: w["weather_pos"].split("-")[0],
    "weather column": lambda w: w["weather_pos"].split("-")[1],
    "battery column": lambda w: w["battery_pos"].split("-")[1],
}

x_train, w_train, x_test, w_test = embedded_features()
x_train, x_test = torch.from_numpy(x_train), torch.from_numpy(x_test)
mu, sd = x_train.reshape(-1, x_train.shape[-1]).mean(0), x_train.reshape(-1, x_train.shape[-1]).std(0) + 1e-4
x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
classes = {q: sorted({f(w) for w in w_train}) for q, f in QUESTIONS.items()}


def labels(watches):
    return torch.tensor([[classes[q].index(f(w)) for q, f in QUESTIONS.items()] for w in watches])


y_train, y_test = labels(w_train), labels(w_test)


class Reader(nn.Module):
    def __init__(self, d_in: int, tokens: int, slots: bool, width: int = 128):
        super().__init__()
        self.adapter = nn.Sequential(nn.Linear(d_in, width), nn.GELU(), nn.Linear(width, width))
        self.slots = nn.Parameter(torch.randn(tokens, width) * 0.02) if slots else None
        self.queries = nn.Parameter(torch.randn(len(QUESTIONS), width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2)
        self.heads = nn.ModuleList(nn.Linear(width, len(classes[q])) for q in QUESTIONS)

    def forward(self, x: torch.Tensor, question: int) -> torch.Tensor:
        h = self.adapter(x)
        if self.slots is not None:
            h = h + self.slots
        q = self.queries[question].expand(len(x), 1, -1)
        return self.heads[question](self.blocks(torch.cat([h, q], 1))[:, -1])


rows = []
for slots in (False, True):
    torch.manual_seed(0)
    model = Reader(x_train.shape[-1], x_train.shape[1], slots)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(1, 3001):
        idx = torch.randint(len(x_train), (64,), generator=g)
        question = step % len(QUESTIONS)
        loss = nn.functional.cross_entropy(model(x_train[idx], question), y_train[idx, question])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0:
            with torch.no_grad():
                for k, q in enumerate(QUESTIONS):
                    accuracy = (model(x_test, k).argmax(-1) == y_test[:, k]).float().mean().item()
                    majority = max((y_test[:, k] == c).float().mean().item() for c in range(len(classes[q])))
                    rows.append(
                        {"slots": slots, "step": step, "question": q, "accuracy": accuracy, "majority": majority}
                    )
            print(slots, step, {r["question"]: round(r["accuracy"], 3) for r in rows[-len(QUESTIONS) :]}, flush=True)
table = pd.DataFrame(rows)
table.to_csv(Path(__file__).with_name("readout_proxy.csv"), index=False)
