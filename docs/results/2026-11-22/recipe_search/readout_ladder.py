"""From the fresh reader that learns (readout_proxy.py) toward the unified model that does not, one change at a
time: the same features and adapter, read by a freshly initialised Llama of the embedded LLM's shape (RoPE, causal,
RMSNorm) with the real question text after the image and a classifier on the last position. Variants:

- `llama`: adapter at PyTorch's default scale;
- `llama + adapter at token scale`: the adapter's output rescaled to the token embeddings' RMS, as UnifiedVLM does;
- `llama + answer as text`: the classifier replaced by the LM head predicting the answer's tokens (teacher forced,
  "t o p - left" for a corner), scored by the column token alone.

Each trains on two questions (the weather, the weather icon's corner), alternating, batch 64, lr 1e-3 constant,
and is scored on the test images every 200 steps. Writes readout_ladder.csv.

    python docs/results/2026-11-22/recipe_search/readout_ladder.py [STEPS] [LAYERS] ["VARIANT;VARIANT"]
"""

import sys
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from _common import embedded_features
from torch import nn
from transformers import LlamaConfig, LlamaModel

from models.lm import load_llm
from models.unified import Adapter

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1200
n_layers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
torch.set_num_threads(2)
_, tokenizer = load_llm("runs/embedded/lm")
QUESTIONS = {
    "weather": ("What is the weather?", lambda w: w["weather"]),
    "weather corner": ("In which corner is the weather icon?", lambda w: w["weather_pos"]),
}

x_train, w_train, x_test, w_test = embedded_features()
x_train, x_test = torch.from_numpy(x_train), torch.from_numpy(x_test)
flat = x_train.reshape(-1, x_train.shape[-1])
mu, sd = flat.mean(0), flat.std(0).clamp(min=1e-4)
x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
classes = {q: sorted({f(w) for w in w_train}) for q, (_, f) in QUESTIONS.items()}
question_ids = {q: tokenizer(text)["input_ids"] for q, (text, _) in QUESTIONS.items()}


def padded_answers(values: list[str]) -> dict[str, list[int]]:
    """Each answer's tokens then end-of-sequence, padded with it to one length per question (as </s> ends answers)."""
    ids = {v: tokenizer(v)["input_ids"] + [tokenizer.eos_token_id] for v in values}
    n = max(map(len, ids.values()))
    return {v: t + [tokenizer.eos_token_id] * (n - len(t)) for v, t in ids.items()}


answer_ids = {v: t for q in classes for v, t in padded_answers(classes[q]).items()}


def labels(watches):
    return torch.tensor([[classes[q].index(f(w)) for q, (_, f) in QUESTIONS.items()] for w in watches])


y_train, y_test = labels(w_train), labels(w_test)
lm_config = LlamaConfig.from_pretrained("runs/embedded/lm")
lm_config.num_hidden_layers = n_layers


class Reader(nn.Module):
    def __init__(self, token_scale: bool, text_answer: bool):
        super().__init__()
        self.llm = LlamaModel(lm_config)
        d = lm_config.hidden_size
        self.adapter = Adapter("mlp", x_train.shape[-1], d)
        if token_scale:
            rms = self.llm.embed_tokens.weight.pow(2).mean().sqrt().item()
            self.adapter.match_output_rms(rms)
        self.text_answer = text_answer
        self.lm_head = nn.Linear(d, lm_config.vocab_size, bias=False)
        self.heads = nn.ModuleList(nn.Linear(d, len(classes[q])) for q in QUESTIONS)

    def forward(self, x, q: int, answers: torch.Tensor | None = None):
        """Classifier logits (B, classes), or with `answers` (B, A) the LM logits at each answer token (B, A, V)."""
        name = list(QUESTIONS)[q]
        ids = torch.tensor(question_ids[name]).expand(len(x), -1)
        parts = [self.adapter(x), self.llm.embed_tokens(ids)]
        if answers is not None:
            parts.append(self.llm.embed_tokens(answers[:, :-1]))
        h = self.llm(inputs_embeds=torch.cat(parts, 1)).last_hidden_state
        if answers is None:
            return self.heads[q](h[:, -1])
        return self.lm_head(h[:, -answers.shape[1] :])


def answer_tokens(q: int, y: torch.Tensor) -> torch.Tensor:
    name = list(QUESTIONS)[q]
    return torch.tensor([answer_ids[classes[name][k]] for k in y.tolist()])


@torch.no_grad()
def score(model, q: int, x, y) -> float:
    if not model.text_answer:
        return (model(x, q).argmax(-1) == y).float().mean().item()
    # Text answers: the class whose answer tokens have the highest likelihood (multiple choice).
    name = list(QUESTIONS)[q]
    total = []
    for k in range(len(classes[name])):
        ans = answer_tokens(q, torch.full((len(x),), k))
        logp = F.log_softmax(model(x, q, ans), -1).gather(-1, ans[..., None])[..., 0].sum(-1)
        total.append(logp)
    return (torch.stack(total, -1).argmax(-1) == y).float().mean().item()


variants = {
    "llama": dict(token_scale=False, text_answer=False),
    "llama + adapter at token scale": dict(token_scale=True, text_answer=False),
    "llama + answer as text": dict(token_scale=False, text_answer=True),
}
only = sys.argv[3].split(";") if len(sys.argv) > 3 else list(variants)
rows = []
for name in only:
    torch.manual_seed(0)
    model = Reader(**variants[name])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        idx = torch.randint(len(x_train), (64,), generator=g)
        q = step % len(QUESTIONS)
        y = y_train[idx, q]
        if model.text_answer:
            ans = answer_tokens(q, y)
            logits = model(x_train[idx], q, ans)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ans.reshape(-1))
        else:
            loss = F.cross_entropy(model(x_train[idx], q), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0:
            accuracies = {q_name: score(model, k, x_test, y_test[:, k]) for k, q_name in enumerate(QUESTIONS)}
            for q_name, accuracy in accuracies.items():
                majority = max(
                    (y_test[:, list(QUESTIONS).index(q_name)] == c).float().mean().item()
                    for c in range(len(classes[q_name]))
                )
                rows.append(
                    {
                        "variant": name,
                        "layers": n_layers,
                        "step": step,
                        "question": q_name,
                        "accuracy": accuracy,
                        "majority": majority,
                    }
                )
            print(name, step, {k: round(v, 3) for k, v in accuracies.items()}, flush=True)
    out = Path(__file__).with_name("readout_ladder.csv")
    table = pd.DataFrame([r for r in rows if r["variant"] == name])
    if out.is_file():  # one variant's rows replaced at a time, so a later failure keeps the earlier ones
        old = pd.read_csv(out)
        table = pd.concat([old[~((old.variant == name) & (old.layers == n_layers))], table], ignore_index=True)
    table.to_csv(out, index=False)
