"""From the fresh reader that learns (readout_proxy.py) toward the unified model that does not, one change at a
time: the same features and adapter, read by a freshly initialised Llama of the embedded LLM's shape (RoPE, causal,
RMSNorm) with the real question text after the image and a classifier on the last position. A variant is "llama"
followed by any of these steps, joined by " + ":

- `adapter at token scale`: the adapter's output rescaled to the token embeddings' RMS, as UnifiedVLM does;
- `answer as text`: the classifier replaced by the LM head predicting the answer's tokens (teacher forced,
  "t o p - left" for a corner), scored by multiple choice;
- `chat template`: the unified model's layout around the image and question: <bos> USER: image question
  \nASSISTANT: answer;
- `image markers`: learned begin/end-of-image vectors around the image's tokens, as UnifiedVLM has;
- `mixed batches`: every batch holds 32 of each question (text answers only), as the Trainer's shuffled batches
  hold a mix, instead of 64 of one question in turn;
- `unified data`: each question drawn only from the training images that carry it in the weather-only unified run's
  dataset (runs/recipe/data-weather-vqa: 739 and 750 of the 2000 images), not from all images;
- `unified optimiser`: the Trainer's AdamW (betas 0.9/0.98, no weight decay), 3% warm-up then cosine decay, and
  gradient clipping at 1.0, instead of PyTorch's AdamW at a constant rate.

Each trains on two questions (the weather, the weather icon's corner), alternating, batch 64, lr 1e-3, and is scored
on the test images every 200 steps. Writes readout_ladder.csv (one variant x layers x seed's rows replaced at a time).

    python docs/results/2026-11-22/recipe_search/readout_ladder.py [STEPS] [LAYERS] ["VARIANT;VARIANT"] [SEEDS]

SEEDS is a comma-separated list (default 0).
"""

import sys
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from _common import embedded_features
from torch import nn
from transformers import LlamaConfig, LlamaModel

from models.chat import ASSISTANT, USER
from models.lm import load_llm
from models.train import lr_factor
from models.unified import Adapter
from tasks.records import load_dataset

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
template_ids = {"user": tokenizer(USER)["input_ids"], "assistant": tokenizer(ASSISTANT)["input_ids"]}


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


STEPS = (
    "adapter at token scale",
    "answer as text",
    "chat template",
    "image markers",
    "mixed batches",
    "unified data",
    "unified optimiser",
)


def unified_pools() -> list[torch.Tensor]:
    """Per question, the indices (into the training features) of the images that carry it in the weather-only
    unified run's dataset, in the order embedded_features() lists the training images."""
    names = list(dict.fromkeys(r["image"] for r in load_dataset("runs/embedded/data").train if r.get("image")))
    index = {name: i for i, name in enumerate(names)}
    carried = {"weather": set(), "weather_pos": set()}
    for r in load_dataset("runs/recipe/data-weather-vqa").train:
        for turn in r["conversations"][::2]:
            carried[turn["attribute"]].add(index[r["image"]])
    return [torch.tensor(sorted(carried[a])) for a in ("weather", "weather_pos")]


def variant_steps(name: str) -> set[str]:
    first, *steps = name.split(" + ")
    unknown = [s for s in steps if s not in STEPS]
    if first != "llama" or unknown:
        raise SystemExit(f"a variant is 'llama' then any of {STEPS} joined by ' + ', got {name!r}")
    if "mixed batches" in steps and "answer as text" not in steps:
        raise SystemExit(f"'mixed batches' needs 'answer as text' (variant {name!r})")
    return set(steps)


class Reader(nn.Module):
    def __init__(self, steps: set[str]):
        super().__init__()
        self.llm = LlamaModel(lm_config)
        d = lm_config.hidden_size
        self.adapter = Adapter("mlp", x_train.shape[-1], d)
        if "adapter at token scale" in steps:
            rms = self.llm.embed_tokens.weight.pow(2).mean().sqrt().item()
            self.adapter.match_output_rms(rms)
        self.text_answer = "answer as text" in steps
        self.template = "chat template" in steps
        self.markers = nn.Parameter(torch.randn(2, d) * 0.02) if "image markers" in steps else None
        self.lm_head = nn.Linear(d, lm_config.vocab_size, bias=False)
        self.heads = nn.ModuleList(nn.Linear(d, len(classes[q])) for q in QUESTIONS)

    def text(self, ids: list[int], n: int) -> torch.Tensor:
        return self.llm.embed_tokens(torch.tensor(ids).expand(n, -1))

    def forward(self, x, q: int, answers: torch.Tensor | None = None):
        """Classifier logits (B, classes), or with `answers` (B, A) the LM logits at each answer token (B, A, V)."""
        name = list(QUESTIONS)[q]
        n = len(x)
        image = [self.adapter(x)]
        if self.markers is not None:
            image = [self.markers[:1].expand(n, 1, -1), *image, self.markers[1:].expand(n, 1, -1)]
        if self.template:
            before = [tokenizer.bos_token_id, *template_ids["user"]]
            after = question_ids[name] + template_ids["assistant"]
            parts = [self.text(before, n), *image, self.text(after, n)]
        else:
            parts = [*image, self.text(question_ids[name], n)]
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


only = sys.argv[3].split(";") if len(sys.argv) > 3 else ["llama", "llama + answer as text"]
seeds = [int(k) for k in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0]
rows = []
for name in only:
    steps_of = variant_steps(name)
    for seed in seeds:
        torch.manual_seed(seed)
        model = Reader(steps_of)
        unified_optimiser = "unified optimiser" in steps_of
        opt = torch.optim.AdamW(
            model.parameters(), lr=1e-3, **(dict(betas=(0.9, 0.98), weight_decay=0.0) if unified_optimiser else {})
        )
        g = torch.Generator().manual_seed(seed)
        pools = unified_pools() if "unified data" in steps_of else [torch.arange(len(x_train))] * len(QUESTIONS)
        for step in range(1, steps + 1):
            if unified_optimiser:  # the Trainer's schedule: 3% warm-up, then cosine
                for group in opt.param_groups:
                    group["lr"] = 1e-3 * lr_factor(step - 1, steps, max(1, round(0.03 * steps)), "cosine")
            if "mixed batches" in steps_of:  # half of each question in every batch, the loss a mean over tokens
                total, count = 0.0, 0
                for q in range(len(QUESTIONS)):
                    idx = pools[q][torch.randint(len(pools[q]), (64 // len(QUESTIONS),), generator=g)]
                    ans = answer_tokens(q, y_train[idx, q])
                    logits = model(x_train[idx], q, ans)
                    total = total + F.cross_entropy(logits.flatten(0, 1), ans.flatten(), reduction="sum")
                    count += ans.numel()
                loss = total / count
            else:
                q = step % len(QUESTIONS)
                idx = pools[q][torch.randint(len(pools[q]), (64,), generator=g)]
                y = y_train[idx, q]
                if model.text_answer:
                    ans = answer_tokens(q, y)
                    logits = model(x_train[idx], q, ans)
                    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ans.reshape(-1))
                else:
                    loss = F.cross_entropy(model(x_train[idx], q), y)
            opt.zero_grad()
            loss.backward()
            if unified_optimiser:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
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
                            "seed": seed,
                            "step": step,
                            "question": q_name,
                            "accuracy": accuracy,
                            "majority": majority,
                        }
                    )
                print(name, seed, step, {k: round(v, 3) for k, v in accuracies.items()}, flush=True)
        out = Path(__file__).with_name("readout_ladder.csv")
        table = pd.DataFrame([r for r in rows if r["variant"] == name and r["seed"] == seed])
        if out.is_file():  # one variant x layers x seed's rows replaced at a time: a later failure keeps the rest
            old = pd.read_csv(out)
            old["seed"] = old["seed"].fillna(0).astype(int) if "seed" in old else 0
            mine = (old.variant == name) & (old.layers == n_layers) & (old.seed == seed)
            table = pd.concat([old[~mine], table], ignore_index=True)
        table.to_csv(out, index=False)
