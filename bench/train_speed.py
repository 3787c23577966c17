"""Training throughput and model FLOP utilisation, and what the feature cache saves, side by side in one run.

1. peak: FLOP/s of a large matmul on this device (fp32 on CPU, bf16 on CUDA), measured here.
2. train: samples/s of real training steps of a config (forward, backward, optimizer), with the FLOPs of one step
   counted by torch's FlopCounterMode (every executed matmul and attention, forward and backward); MFU is
   achieved FLOP/s over the matmul peak.
3. re-encode: the same steps when every batch's images also go through the frozen encoder(s), which is what
   training without the cache would do; the ratio is what caching saves.
4. bf16: on CPU, the same cached steps under bf16 autocast (`precision: bf16`), against fp32 and against a bf16
   matmul peak: what opting in buys on a CPU with AMX. (On CUDA every step is already bf16.)
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.device import autocast
from models.encoders.images import to_tensor
from models.sequence import collate
from models.train import Trainer, batch_indices
from unilens.config import load_config


def matmul_peak(device: torch.device, n: int, repeats: int = 5, dtype: torch.dtype | None = None) -> float:
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    from models.train import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", nargs="?", default="configs/train/vq-vq-lora.yaml")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--matmul", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default); 1 on a busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(TrainConfig, args.config)
    trainer = Trainer(cfg, progress=False)
    model, device = trainer.model.train(), trainer.device
    encoders = trainer.built.encoders
    dataset = trainer.dataset

    def batch_at(step: int):
        idx = batch_indices(step, len(trainer.sequences), cfg.batch_size, cfg.seed)
        seqs = [trainer.sequences[i] for i in idx]
        return seqs, collate(seqs, trainer.und_space, trainer.gen_space, trainer.encoder.pad_id).to(device)

    def step(i: int, reencode: bool, precision: str = "auto") -> None:
        seqs, batch = batch_at(i)
        if reencode:  # what the cache avoids: the frozen encoders run on this batch's images
            pixels = to_tensor([dataset.images[s.image] for s in seqs if s.image]).to(device)
            with torch.no_grad():
                for enc in encoders.values():
                    enc.to(device)
                    enc.codes(pixels) if enc.kind == "vq" else enc.features(pixels)
        with autocast(device, precision):
            loss = model(batch)["loss"]
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step(0, False)
    flops_per_step = counter.get_total_flops()
    results = {}
    settings = [("cached features", False, "auto"), ("re-encode every batch", True, "auto")]
    if device.type == "cpu":
        settings.append(("cached, bf16 autocast", False, "bf16"))
    for label, reencode, precision in settings:
        step(1, reencode, precision)  # warm-up
        sync(device)
        start = time.perf_counter()
        for i in range(args.steps):
            step(2 + i, reencode, precision)
        sync(device)
        results[label] = (time.perf_counter() - start) / args.steps
    peak = matmul_peak(device, args.matmul)
    t = results["cached features"]
    print(f"{args.config} on {device} ({torch.get_num_threads()} threads), batch {cfg.batch_size}, {args.steps} steps")
    print(f"  matmul peak ({args.matmul}^3): {peak / 1e9:8.1f} GFLOP/s")
    print(f"  counted FLOPs per training step: {flops_per_step / 1e9:8.1f} GFLOP")
    for label, s in results.items():
        print(f"  {label:>22}: {s:6.3f} s/step, {cfg.batch_size / s:6.1f} samples/s")
    print(f"  model FLOP utilisation: {flops_per_step / t / peak:.1%} of the matmul peak (target >= 40%)")
    print(f"  caching saves: re-encoding is {results['re-encode every batch'] / t:.2f}x slower per step")
    if "cached, bf16 autocast" in results:
        t16 = results["cached, bf16 autocast"]
        peak16 = matmul_peak(device, args.matmul, dtype=torch.bfloat16)
        print(f"  bf16 matmul peak ({args.matmul}^3): {peak16 / 1e9:8.1f} GFLOP/s ({peak16 / peak:.2f}x fp32)")
        mfu16 = flops_per_step / t16 / peak16
        print(f"  bf16 autocast: {t / t16:.2f}x the fp32 step rate; MFU {mfu16:.1%} of the bf16 matmul peak")


if __name__ == "__main__":
    main()
