"""The LLM: any Hugging Face causal LM from a local folder, or the embedded default, a small Llama with a tokenizer
trained here on the world's text and pre-trained on text only (`unilens lm pretrain`)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.chat import conversation_text
from models.fit import optimize
from models.sequence import Encoder
from tasks.records import load_dataset
from unilens.config import to_dict
from unilens.errors import UnilensError
from unilens.io import atomic_dir

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


@dataclass
class LMConfig:
    dataset: str = "runs/data/default"
    vocab_size: int = 512
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 4
    d_ff: int = 688
    max_positions: int = 512
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    warmup: float = 0.05
    seed: int = 0
    # Share of each batch made of a random token span shown twice, the second copy supervised. Why: the world's
    # templated text never asks a head to find an earlier token by its content, and an LLM pre-trained on it alone
    # cannot copy in context (copy_gain ~0); reading an image is that kind of look-up.
    copy_fraction: float = 0.0
    copy_span: int = 32


def copy_sequences(n: int, span: int, vocab: int, first_id: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2 * span) token ids: a random span of ordinary tokens, then the same span again."""
    x = rng.integers(first_id, vocab, (n, span))
    return np.concatenate([x, x], axis=1)


@torch.no_grad()
def copy_gain(model: torch.nn.Module, vocab: int, first_id: int, span: int = 32, n: int = 64, seed: int = 1) -> dict:
    """The in-context copying test: mean next-token loss on a random span's first and second showing. A model that
    can look tokens up by content predicts the second showing far better (gain near ln V); one that cannot, not."""
    ids = torch.from_numpy(copy_sequences(n, span, vocab, first_id, np.random.default_rng(seed)))
    logits = model(input_ids=ids).logits.float()
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    first, second = nll[:, : span - 1].mean().item(), nll[:, span:].mean().item()
    return {"copy_first_nll": first, "copy_second_nll": second, "copy_gain": first - second}


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE with every digit its own token, so numbers (times, percentages) compose digit by digit."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def build_llama(cfg: LMConfig, tokenizer) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def load_llm(path: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a local folder saved with save_pretrained; never touches a hub."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UnilensError(
            f"no LLM at {path} (expected a save_pretrained folder with config.json; "
            "pre-train the embedded one with `unilens lm pretrain` or give a local Llama/Qwen2 folder)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise UnilensError(f"could not load the LLM at {path}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def pretrain_lm(cfg: LMConfig, out: str | Path, progress: bool = True) -> dict:
    """Tokenizer + small Llama trained on the world's conversations with images removed."""
    if not 0 <= cfg.copy_fraction < 1:
        raise UnilensError(f"copy_fraction must be in [0, 1), got {cfg.copy_fraction}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    ds = load_dataset(cfg.dataset)
    tokenizer = train_tokenizer([conversation_text(r["conversations"]) for r in ds.train], cfg.vocab_size)
    # The unified model's own sequence encoder, images dropped: pre-training sees the very token ids (piece
    # boundaries, </s> after each answer) that the unified model will see around its images.
    text_only = Encoder(tokenizer, 0, images=False)
    texts = [text_only.record(r).ids for r in ds.train]
    held_out = [text_only.record(r).ids for r in ds.test]
    model = build_llama(cfg, tokenizer)

    def encode(enc: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(max(map(len, enc)), cfg.max_positions)
        ids = torch.full((len(enc), n), tokenizer.pad_token_id)
        for i, e in enumerate(enc):
            ids[i, : min(len(e), n)] = torch.tensor(e[:n])
        labels = ids.masked_fill(ids == tokenizer.pad_token_id, -100)
        return ids, labels

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warm = max(1, int(cfg.warmup * cfg.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
    )
    start = time.time()
    model.train()

    n_copy = round(cfg.copy_fraction * cfg.batch_size)
    first_id = len(SPECIAL_TOKENS)  # the special tokens come first in the vocabulary

    def step_loss(_step: int) -> tuple[torch.Tensor, float]:
        ids, labels = encode([texts[i] for i in rng.integers(0, len(texts), cfg.batch_size - n_copy)])
        loss = model(input_ids=ids, attention_mask=ids != tokenizer.pad_token_id, labels=labels).loss
        if n_copy:
            copy = torch.from_numpy(copy_sequences(n_copy, cfg.copy_span, len(tokenizer), first_id, rng))
            copy_labels = copy.clone()
            copy_labels[:, : cfg.copy_span] = -100  # the first showing is noise: only the repeat can be learned
            copy_loss = model(input_ids=copy, labels=copy_labels).loss
            share = n_copy / cfg.batch_size
            loss = (1 - share) * loss + share * copy_loss
        return loss, loss.item()

    losses = optimize(list(model.parameters()), step_loss, opt, sched, cfg.steps, "lm pretrain", progress)
    model.eval()
    with torch.no_grad():
        ids, labels = encode(held_out[:128])
        test_loss = model(input_ids=ids, attention_mask=ids != tokenizer.pad_token_id, labels=labels).loss.item()
    report = {
        **copy_gain(model, len(tokenizer), first_id),
        "first_loss": float(np.mean(losses[:20])),
        "final_loss": float(np.mean(losses[-20:])),
        "test_loss": test_loss,
        "params": sum(p.numel() for p in model.parameters()),
        "vocab": len(tokenizer),
        "seconds": time.time() - start,
    }
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "unilens_lm.json").write_text(json.dumps({"config": to_dict(cfg), "report": report}, indent=2))
    return report
