"""Decoding with the KV cache vs recomputing the prefix at every step, side by side in one run: image generation
(64 VQ tokens after a ~40-token prompt) and greedy text answers, at the embedded default size."""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from models.generate import generate_image_tokens, greedy_answers
from models.sequence import Batch
from models.unified import ModelConfig, UnifiedVLM


class RandomVQSpace:
    kind = "vq"

    def __init__(self, codebook_size: int = 1024, dim: int = 8):
        self.codebook = torch.randn(codebook_size, dim)


def prompt_batch(b: int, n: int) -> Batch:
    ids = torch.randint(5, 500, (b, n))
    return Batch(
        ids=ids,
        kind=torch.zeros(b, n, dtype=torch.long),
        labels=torch.full((b, n), -100),
        tags=torch.zeros(b, n, dtype=torch.long),
        attention_mask=torch.ones(b, n, dtype=torch.bool),
        und_inputs=torch.zeros(0, 8),
        gen_inputs=torch.zeros(0, 8),
        gen_targets=torch.zeros(0),
        contexts=[],
        images=[],
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=40)
    parser.add_argument("--image-tokens", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: default); use 1 when the machine is busy"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # oversubscribed OpenMP threads spin and distort every timing
    torch.manual_seed(0)
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=512,
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=6,
            num_attention_heads=4,
            num_key_value_heads=4,
            eos_token_id=511,
        )
    )
    model = UnifiedVLM(ModelConfig(variant="vq-vq"), llm, 8, 8, 1024).eval()
    space = RandomVQSpace()
    batch = prompt_batch(args.batch, args.prompt)
    print(f"batch {args.batch}, prompt {args.prompt} positions; threads {torch.get_num_threads()}")
    print(f"{'task':<28} {'cache s':>8} {'no cache s':>11} {'speed-up':>9}")
    for name, run in (
        (
            f"image, {args.image_tokens} tokens",
            lambda c: generate_image_tokens(model, batch, args.image_tokens, space, use_cache=c),
        ),
        ("text answer, 16 tokens", lambda c: greedy_answers(model, batch, eos_id=-1, max_new_tokens=16, use_cache=c)),
    ):
        run(True)  # warm-up
        cached, fresh = timed(lambda r=run: r(True)), timed(lambda r=run: r(False))
        print(f"{name:<28} {cached:>8.3f} {fresh:>11.3f} {fresh / cached:>8.1f}x")


if __name__ == "__main__":
    main()
