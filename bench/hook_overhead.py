"""What reading the residual stream costs: plain forward vs our hooks (caching every resid_post) vs the
TransformerLens bridge (same cache), measured side by side in one run. Target: our hooks <= 1.10x plain.

Models are randomly initialised Llamas (speed does not depend on training): the embedded default size
(d 256, 6 layers) and a ~100M-parameter one (d 768, 12 layers).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.random_vlm import SIZES, describe, make
from models.sequence import UND_IMAGE, Batch
from probes.bridge import to_bridge
from probes.hooks import HookedVLM

TIMED = ("embedded", "100M")  # the GPU size is too slow for two CPU cores


def batch_for(b: int, n: int, image: int = 64) -> Batch:
    kind = torch.zeros(b, n, dtype=torch.long)
    kind[:, 4 : 4 + image] = UND_IMAGE
    ids = torch.randint(5, 500, (b, n))
    return Batch(
        ids=ids,
        kind=kind,
        labels=torch.full((b, n), -100),
        tags=torch.zeros(b, n, dtype=torch.long),
        attention_mask=torch.ones(b, n, dtype=torch.bool),
        und_inputs=torch.randn(b * image, 8),
        gen_inputs=torch.zeros(0, 8),
        gen_targets=torch.zeros(0, dtype=torch.long),
        contexts=[],
        images=[],
    )


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--positions", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: default); use 1 when the machine is busy"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # oversubscribed OpenMP threads spin and distort every timing
    print(
        f"batch {args.batch} x {args.positions} positions, median of {args.repeats}; threads {torch.get_num_threads()}"
    )
    print(f"{'model':<22} {'plain s':>8} {'hooks s':>8} {'bridge s':>9} {'hooks/plain':>12} {'bridge/plain':>13}")
    for size in TIMED:
        plain, ours, theirs = measure(size, args.batch, args.positions, args.repeats)
        name = describe(size)
        print(f"{name:<22} {plain:>8.3f} {ours:>8.3f} {theirs:>9.3f} {ours / plain:>11.2f}x {theirs / plain:>12.2f}x")


@torch.no_grad()
def measure(size: str, b: int, n: int, repeats: int) -> tuple[float, float, float]:
    model = make(size)
    layers = SIZES[size][1]
    batch = batch_for(b, n)
    hooked = HookedVLM(model)
    resid = [f"blocks.{i}.hook_resid_post" for i in range(layers)]
    emb = model.embed(batch)
    bridge = to_bridge(model)
    plain = timed(lambda: model.hidden(batch, inputs_embeds=emb), repeats)
    ours = timed(lambda: hooked.run_with_cache_embeds(emb, batch, resid), repeats)
    theirs = timed(lambda: bridge.run_with_cache(emb.clone(), names_filter=lambda name: name in resid), repeats)
    return plain, ours, theirs


if __name__ == "__main__":
    main()
