"""Decoding with the KV cache vs recomputing the prefix at every step, side by side in one run: image generation
(64 VQ tokens after a ~40-token prompt) and greedy text answers, at the embedded default size (d256 x 6) or at GPU
scale (`--size gpu`: d1024 x 16, configs/embedded_gpu.yaml's LLM). On CUDA the model runs under bf16 autocast, as
evaluation does."""

from __future__ import annotations

import argparse
import time

import torch

from bench.random_vlm import SIZES, describe, make
from models.device import autocast, pick_device
from models.generate import generate_image_tokens, greedy_answers
from models.sequence import Batch


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


def timed(fn, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=40)
    parser.add_argument("--image-tokens", type=int, default=64)
    parser.add_argument("--size", choices=sorted(SIZES), default="embedded")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: default); use 1 when the machine is busy"
    )
    args = parser.parse_args()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)  # oversubscribed OpenMP threads spin and distort every timing
    torch.manual_seed(0)
    model = make(args.size).to(device)
    space = RandomVQSpace()
    batch = prompt_batch(args.batch, args.prompt).to(device)
    print(
        f"{describe(args.size)} LLM on {device}, batch {args.batch}, prompt {args.prompt} positions; "
        f"threads {torch.get_num_threads()}"
    )
    print(f"{'task':<28} {'cache s':>8} {'no cache s':>11} {'speed-up':>9}")
    for name, run in (
        (
            f"image, {args.image_tokens} tokens",
            lambda c: generate_image_tokens(model, batch, args.image_tokens, space, use_cache=c),
        ),
        ("text answer, 16 tokens", lambda c: greedy_answers(model, batch, eos_id=-1, max_new_tokens=16, use_cache=c)),
    ):
        with autocast(device):
            run(True)  # warm-up
            cached, fresh = timed(lambda r=run: r(True), device), timed(lambda r=run: r(False), device)
        print(f"{name:<28} {cached:>8.3f} {fresh:>11.3f} {fresh / cached:>8.1f}x")


if __name__ == "__main__":
    main()
