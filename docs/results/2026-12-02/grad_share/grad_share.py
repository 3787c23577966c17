"""How much of each update does each loss get? Gradient norms of the text loss and of the weighted image loss,
taken apart on the same training batches, over the LoRA parameters and over the adapters, beside the clip norm.

Why: on the dense world the semantic-output runs (sem-sem, vq-sem) keep a flat text loss after step 400 while the
VQ-output runs keep lowering it, and vq-sem at 50% does not use its image at all. If the image loss's gradient
dominated the global norm, clipping to max_grad_norm would shrink the text's share of every step.

    python docs/results/2026-12-02/grad_share/grad_share.py CONFIG [--checkpoint DIR] [--batches 8] --out OUT.csv

Without --checkpoint the model is the run's initialisation (step 0). The run folder is only read.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import torch

from models.checkpoint import load_trainable
from models.train import TrainConfig, Trainer
from unilens.config import load_config


def norm(grads: list[torch.Tensor | None]) -> float:
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--checkpoint")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = load_config(TrainConfig, args.config)
    cfg.out = tempfile.mkdtemp()  # the trainer is built only for its model and batches; nothing is written to the run
    trainer = Trainer(cfg, progress=False)
    model = trainer.model
    step = 0
    if args.checkpoint:
        load_trainable(model, Path(args.checkpoint))
        step = int(Path(args.checkpoint).name.split("-")[1])
    model.train()
    groups = {"lora": [], "adapters": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups["lora" if name.startswith("llm.") else "adapters"].append(p)
    params = [p for ps in groups.values() for p in ps]
    rows = []
    for b in range(args.batches):
        out = trainer.step_loss(step + b)
        # the image part alone: the same forward and normalisation with every text weight zero
        image_only = trainer.step_loss(step + b, text_scale=0.0)["loss"]
        total = torch.autograd.grad(out["loss"], params, retain_graph=True, allow_unused=True)
        image = torch.autograd.grad(image_only, params, allow_unused=True)
        start = 0
        for g, ps in groups.items():  # one backward pass per loss, split by group afterwards
            total_grads, image_grads = total[start : start + len(ps)], image[start : start + len(ps)]
            start += len(ps)
            text_grads = [
                None if t is None else t - (i if i is not None else 0)
                for t, i in zip(total_grads, image_grads, strict=True)
            ]
            rows.append(
                {
                    "variant": cfg.model.variant,
                    "step": step,
                    "batch": b,
                    "group": g,
                    "text_grad_norm": norm(text_grads),
                    "image_grad_norm": norm(image_grads),
                    "total_grad_norm": norm(total_grads),
                    "text_loss": float(out["text_loss"]),
                    "image_loss": float(out["image_loss"]),
                    "image_loss_weight": model.image_loss_weight,
                    "max_grad_norm": cfg.max_grad_norm,
                }
            )
    df = pd.DataFrame(rows)
    df.to_csv(args.out, index=False)
    summary = df.groupby("group")[["text_grad_norm", "image_grad_norm", "total_grad_norm"]].mean()
    print(cfg.model.variant, "step", step)
    print(summary.to_string())


if __name__ == "__main__":
    main()
