"""The unified model itself (UnifiedVLM from models.build, its sequence encoder and collate) trained in
readout_ladder.py's loop: batches of 64 drawn with replacement from the 2000 training images, the weather and the
weather-corner question in turn, AdamW (betas 0.9/0.98, no weight decay), 3% warm-up then cosine, clipping at 1.0,
lr 1e-3; scored every 200 steps by multiple choice on the 200 test images as readout_ladder.py scores its readers.
If this learns the column and `unilens train` on the same questions does not, the cause is in the Trainer's loop;
if it does not, it is in the model. Appends rows to readout_ladder.csv under the variant "unified model".

    python docs/results/2026-11-22/recipe_search/unified_in_ladder.py [STEPS] [SEEDS] [WORDING]

WORDING: "ladder" (the reader's questions, default) or "dataset" (the every-image dataset's one wording).
"""

import sys
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from models.build import build_model, build_spaces
from models.presets import FreezeConfig
from models.sequence import Encoder, collate
from models.train import lr_factor
from models.unified import ModelConfig
from tasks.records import load_dataset

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 400
seeds = [int(k) for k in sys.argv[2].split(",")] if len(sys.argv) > 2 else [0]
wording_kind = sys.argv[3] if len(sys.argv) > 3 else "ladder"
torch.set_num_threads(2)
ATTRIBUTES = {
    "weather": ("sunny", "cloudy", "raining"),
    "weather_pos": ("top-left", "top-right", "bottom-left", "bottom-right"),
}
WORDINGS = {
    "ladder": {"weather": "What is the weather?", "weather_pos": "In which corner is the weather icon?"},
    "dataset": {"weather": "Which weather condition is shown?", "weather_pos": "Locate the weather icon."},
}
wording = WORDINGS[wording_kind]
cfg = ModelConfig(variant="sem-sem", llm="runs/recipe/lm-random-2l")
dataset = load_dataset("runs/embedded/data")
train_watches = {r["image"]: r["watch"] for r in dataset.train if r.get("image")}
test_watches = {r["image"]: r["watch"] for r in dataset.test if r["task"] == "vqa"}
train_images = list(train_watches)


def record(image: str, attribute: str, value: str) -> dict:
    human = {"from": "human", "value": "<image>\n" + wording[attribute], "attribute": attribute}
    return {"task": "vqa", "image": image, "conversations": [human, {"from": "gpt", "value": value}]}


def batch_of(built, enc, und, gen, records: list[dict]):
    return collate([enc.record(r) for r in records], und, gen, enc.pad_id)


@torch.no_grad()
def choice_accuracy(built, enc, und, gen) -> dict[str, float]:
    built.model.eval()
    out = {}
    for attribute, values in ATTRIBUTES.items():
        records = [record(i, attribute, v) for i in test_watches for v in values]
        logps = []
        for lo in range(0, len(records), 64):
            chunk = records[lo : lo + 64]
            seqs = [enc.record(r) for r in chunk]
            batch = collate(seqs, und, gen, enc.pad_id)
            logp = F.log_softmax(built.model.text_logits(built.model.hidden(batch)).float(), -1)
            for b, s in enumerate(seqs):
                ((start, end, _),) = s.answers
                targets = torch.tensor(s.ids[start:end])
                logps.append(logp[b, start - 1 : end - 1].gather(-1, targets[:, None]).sum().item())
        scores = torch.tensor(logps).view(len(test_watches), len(values))
        truth = torch.tensor([values.index(w[attribute]) for w in test_watches.values()])
        out[attribute] = (scores.argmax(-1) == truth).float().mean().item()
    built.model.train()
    return out


rows = []
name = "unified model" + ("" if wording_kind == "ladder" else " + dataset wording")
for seed in seeds:
    built = build_model(cfg, FreezeConfig("full"), seed=seed)
    und, gen = build_spaces(built, cfg, dataset, "runs/cache")
    features = torch.cat([und.inputs(i) for i in train_images])
    built.model.fit_feature_norms(features, features)
    enc = Encoder(built.tokenizer, und.num_tokens)
    params = [p for p in built.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    built.model.train()
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = 1e-3 * lr_factor(step - 1, steps, max(1, round(0.03 * steps)), "cosine")
        attribute = list(ATTRIBUTES)[step % len(ATTRIBUTES)]
        idx = torch.randint(len(train_images), (64,), generator=g).tolist()
        records = [record(train_images[i], attribute, train_watches[train_images[i]][attribute]) for i in idx]
        loss = built.model(batch_of(built, enc, und, gen, records))["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 200 == 0:
            accuracies = choice_accuracy(built, enc, und, gen)
            names = {"weather": "weather", "weather_pos": "weather corner"}
            for attribute, accuracy in accuracies.items():
                rows.append(
                    {
                        "variant": name,
                        "layers": 2,
                        "seed": seed,
                        "step": step,
                        "question": names[attribute],
                        "accuracy": accuracy,
                        "majority": max(
                            sum(w[attribute] == v for w in test_watches.values()) / len(test_watches)
                            for v in ATTRIBUTES[attribute]
                        ),
                    }
                )
            print(name, seed, step, {k: round(v, 3) for k, v in accuracies.items()}, flush=True)
out = Path(__file__).with_name("readout_ladder.csv")
old = pd.read_csv(out)
mine = (old.variant == name) & old.seed.isin(seeds)
pd.concat([old[~mine], pd.DataFrame(rows)], ignore_index=True).to_csv(out, index=False)
