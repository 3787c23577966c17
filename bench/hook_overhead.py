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
from transformers import LlamaConfig, LlamaForCausalLM

from models.sequence import UND_IMAGE, Batch
from models.unified import ModelConfig, UnifiedVLM
from probes.bridge import to_bridge
from probes.hooks import HookedVLM

SIZES = {"embedded (d256 x 6)": (256, 6, 4, 688), "100M (d768 x 12)": (768, 12, 12, 2048)}


def make(d: int, layers: int, heads: int, ff: int) -> UnifiedVLM:
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=512,
            hidden_size=d,
            intermediate_size=ff,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
        )
    )
    return UnifiedVLM(ModelConfig(variant="vq-vq"), llm, 8, 8, 1024).eval()


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
    for name, dims in SIZES.items():
        plain, ours, theirs = measure(dims, args.batch, args.positions, args.repeats)
        print(f"{name:<22} {plain:>8.3f} {ours:>8.3f} {theirs:>9.3f} {ours / plain:>11.2f}x {theirs / plain:>12.2f}x")


@torch.no_grad()
def measure(dims: tuple[int, int, int, int], b: int, n: int, repeats: int) -> tuple[float, float, float]:
    d, layers, heads, ff = dims
    model = make(d, layers, heads, ff)
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
