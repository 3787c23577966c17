"""Train the embedded encoders on a world dataset's training images: `unilens encoders train semantic|vq`."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.encoders.images import to_tensor
from models.encoders.semantic import SemanticEncoder, TextTower, TinyViT, ViTConfig, sigmoid_loss
from models.encoders.vq import VQVAE, VQConfig, VQEncoder
from models.fit import optimize
from tasks.records import load_dataset
from tasks.templates import ALL_ATTRIBUTES, clause
from tasks.world import Watch
from unilens.errors import UnilensError


@dataclass
class EncoderTrainConfig:
    dataset: str = "runs/data/default"
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    vit: ViTConfig = field(default_factory=ViTConfig)
    vq: VQConfig = field(default_factory=VQConfig)


WORD_RE = re.compile(r"\d|[a-z]+|[^\sa-z\d]")


def full_caption(watch: Watch, rng: np.random.Generator) -> str:
    """Every attribute, in a random order, so the contrastive loss needs all of them to match pairs."""
    order = rng.permutation(len(ALL_ATTRIBUTES))
    return "a smart watch" + "".join(clause(watch, ALL_ATTRIBUTES[i]) for i in order)


def _train_images(dataset: str) -> tuple[np.ndarray, list[Watch]]:
    ds = load_dataset(dataset)
    ids, watches = [], []
    seen = set()
    for rec in ds.train:
        if rec["image"] not in seen:
            seen.add(rec["image"])
            ids.append(rec["image"])
            watches.append(Watch.from_dict(rec["watch"]))
    return np.stack([ds.images[i] for i in ids]), watches


def _check_size(images: np.ndarray, image_size: int, what: str) -> None:
    if images.shape[1] != image_size:
        raise UnilensError(
            f"{what}.image_size is {image_size} but the dataset's images are {images.shape[1]} px "
            f"(set {what}.image_size: {images.shape[1]} or make the dataset at {image_size} px)"
        )


def train_semantic(cfg: EncoderTrainConfig, out: str | Path, progress: bool = True) -> dict:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    images, watches = _train_images(cfg.dataset)
    _check_size(images, cfg.vit.image_size, "vit")
    vocab: dict[str, int] = {"<pad>": 0}
    for w in watches[:200]:
        for tok in WORD_RE.findall(full_caption(w, rng)):
            vocab.setdefault(tok, len(vocab))

    def encode_text(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        toks = [[vocab.get(t, 0) for t in WORD_RE.findall(s)] for s in texts]
        n = max(map(len, toks))
        ids = torch.tensor([t + [0] * (n - len(t)) for t in toks])
        return ids, ids != 0

    vit = TinyViT(cfg.vit)
    text = TextTower(len(vocab), cfg.vit.width, cfg.vit.embed_dim)
    log_t = torch.nn.Parameter(torch.tensor(np.log(10.0), dtype=torch.float32))
    bias = torch.nn.Parameter(torch.tensor(-10.0))
    params = [*vit.parameters(), *text.parameters(), log_t, bias]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    start = time.time()

    def step_loss(_step: int) -> tuple[torch.Tensor, float]:
        idx = rng.choice(len(images), size=min(cfg.batch_size, len(images)), replace=False)
        ids, mask = encode_text([full_caption(watches[i], rng) for i in idx])
        loss = sigmoid_loss(vit.embed(to_tensor(images[idx])), text(ids, mask), log_t, bias)
        return loss, loss.item()

    losses = optimize(params, step_loss, opt, sched, cfg.steps, "semantic", progress)
    # Retrieval accuracy on held-out pairs: does the image embedding pick its own caption among 64?
    vit.eval()
    with torch.no_grad():
        n = min(64, len(images))
        ids, mask = encode_text([full_caption(w, rng) for w in watches[-n:]])
        sims = vit.embed(to_tensor(images[-n:])) @ text(ids, mask).T
        retrieval = (sims.argmax(1) == torch.arange(n)).float().mean().item()
    report = {
        "final_loss": float(np.mean(losses[-20:])),
        "first_loss": float(np.mean(losses[:20])),
        "retrieval_at_1_of_64": retrieval,
        "seconds": time.time() - start,
        "tokens": vit.num_tokens,
        "feature_dim": vit.feature_dim,
    }
    SemanticEncoder(vit, "tiny-vit").save_pretrained(out, extra={"train_report": report, "dataset": cfg.dataset})
    return report


def train_vq(cfg: EncoderTrainConfig, out: str | Path, progress: bool = True) -> dict:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    images, _ = _train_images(cfg.dataset)
    _check_size(images, cfg.vq.image_size, "vq")
    model = VQVAE(cfg.vq)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    start = time.time()

    def step_loss(_step: int) -> tuple[torch.Tensor, float]:
        idx = rng.choice(len(images), size=min(cfg.batch_size, len(images)), replace=False)
        x = to_tensor(images[idx])
        rec, _codes, commit = model(x)
        mse = (rec - x).pow(2).mean()
        return mse + commit.sum(), mse.item()

    losses = optimize(list(model.parameters()), step_loss, opt, sched, cfg.steps, "vq", progress)
    model.eval()
    encoder = VQEncoder(model)
    with torch.no_grad():
        used: set[int] = set()
        errs = []
        for i in range(0, len(images), 128):
            x = to_tensor(images[i : i + 128])
            codes = encoder.codes(x)
            used.update(codes.flatten().tolist())
            errs.append((encoder.decode(codes) - x).pow(2).mean().item())
    report = {
        "final_mse": float(np.mean(losses[-20:])),
        "first_mse": float(np.mean(losses[:20])),
        "eval_mse": float(np.mean(errs)),
        "codebook_used": len(used),
        "codebook_size": cfg.vq.codebook_size,
        "codebook_usage": len(used) / cfg.vq.codebook_size,
        "seconds": time.time() - start,
        "tokens": encoder.num_tokens,
    }
    encoder.save_pretrained(out, extra={"train_report": report, "dataset": cfg.dataset})
    return report


def print_report(report: dict) -> None:
    print(json.dumps(report, indent=2))
