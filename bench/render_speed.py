"""Rendering throughput on one core at each image size, and the time to build a 60k-image dataset at that rate.

Target (issue 2): at least 300 images/s at 128 px on one core.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tasks.render import render_array
from tasks.world import Nuisance, sample_watch


def images_per_second(size: int, n: int, nuisance: Nuisance) -> float:
    rng = np.random.default_rng(0)
    watches = [sample_watch(rng, nuisance=nuisance) for _ in range(n)]
    start = time.perf_counter()
    for w in watches:
        render_array(w, size)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'size':>5} {'faces':>12} {'img/s':>8} {'60k images':>11} {'vs 300/s target':>16}")
    for size in (64, 128, 224):
        for label, nuisance in (("solid", Nuisance()), ("mesh+noise", Nuisance({"mesh": 0.5, "noise": 0.5}))):
            rate = images_per_second(size, args.n, nuisance)
            print(f"{size:>5} {label:>12} {rate:>8.0f} {60000 / rate:>10.0f}s {rate / 300:>15.2f}x")


if __name__ == "__main__":
    main()
