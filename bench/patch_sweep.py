"""Batched activation patching vs one (site, group) cell per forward pass, side by side in one run.

The sweep is the layer x group grid (every layer x 3 site kinds x 3 groups + the adapter cell) on a randomly
initialised model (speed does not depend on training) of the embedded size or larger (`--size`). Target: batched
>= 5x faster. On CUDA the passes run under bf16 autocast.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.hook_overhead import batch_for
from bench.random_vlm import SIZES, describe, make
from models.device import autocast, pick_device
from models.sequence import TAG
from probes.patching import Cell, patch_sweep


def tagged(b: int, n: int):
    batch = batch_for(b, n)
    batch.tags[:] = TAG["question"]
    batch.tags[:, 4 : 4 + 64] = TAG["image"]
    batch.tags[:, -3:] = TAG["template"]
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--positions", type=int, default=80)
    parser.add_argument("--cells-per-pass", type=int, default=19)
    parser.add_argument("--size", choices=sorted(SIZES), default="embedded")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default); 1 on a busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = pick_device(args.device)
    model = make(args.size).to(device)
    n_layers = SIZES[args.size][1]
    clean, corrupt = tagged(args.pairs, args.positions), tagged(args.pairs, args.positions)
    corrupt.und_inputs = torch.randn_like(corrupt.und_inputs)
    clean, corrupt = clean.to(device), corrupt.to(device)
    good, bad = torch.full((args.pairs,), 7, device=device), torch.full((args.pairs,), 9, device=device)
    cells = [Cell("blocks.0.hook_resid_pre", "image")] + [
        Cell(f"blocks.{layer}.hook_{kind}", group)
        for layer in range(n_layers)
        for kind in ("resid_post", "attn_out", "mlp_out")
        for group in ("image", "question", "template")
    ]
    timings = {}
    for label, per in (("one cell per pass", 1), (f"{args.cells_per_pass} cells per pass", args.cells_per_pass)):
        with autocast(device):
            patch_sweep(model, clean, corrupt, good, bad, cells[:2], batch_cells=per)  # warm-up
            start = time.perf_counter()
            df = patch_sweep(model, clean, corrupt, good, bad, cells, batch_cells=per)
            if device.type == "cuda":
                torch.cuda.synchronize()
        timings[label] = (time.perf_counter() - start, df)
    (t1, d1), (tb, db) = timings.values()
    gap = (torch.tensor(d1["patched"].values) - torch.tensor(db["patched"].values)).abs().max().item()
    print(
        f"{describe(args.size)} on {device}: {len(cells)} cells x {args.pairs} pairs x {args.positions} positions; "
        f"threads {torch.get_num_threads()}"
    )
    for label, (t, _) in timings.items():
        print(f"  {label:>22}: {t:7.2f} s")
    print(f"  batched speed-up: {t1 / tb:.2f}x (target >= 5x); largest difference between the two effects: {gap:.2g}")


if __name__ == "__main__":
    main()
