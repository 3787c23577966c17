"""Device and precision choice in one place: CUDA with bf16 autocast when present, else CPU fp32 unless asked."""

from __future__ import annotations

import contextlib

import torch

from unilens.errors import UnilensError

PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UnilensError(f"unknown precision '{precision}'; choose one of {list(PRECISIONS)}")


def uses_bf16(device: torch.device, precision: str = "auto") -> bool:
    """auto: bf16 on CUDA, fp32 on CPU. bf16 on CPU is opt-in: on an AMX CPU its large matmuls ran 2.9-3.3x faster
    than fp32, but a d_model-256 training step only 1.05-1.31x (bench/RESULTS.md); CPUs without bf16 instructions
    may be slower. bench/train_speed.py measures both on the machine at hand."""
    check_precision(precision)
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str = "auto"):
    """Weights stay fp32; matmuls run in bf16 where `uses_bf16`."""
    if uses_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
