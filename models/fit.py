"""The optimisation loop shared by the small trainers (encoders, LLM pre-training, attribute reader)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from unilens.errors import UnilensError


def optimize(
    params: list[torch.nn.Parameter],
    step_loss: Callable[[int], tuple[torch.Tensor, float]],
    optimizer: torch.optim.Optimizer,
    scheduler,
    steps: int,
    desc: str,
    progress: bool = True,
    clip: float | None = 1.0,
) -> list[float]:
    """Run `steps` updates; `step_loss(step)` returns (loss to minimise, number to log). Stops on a non-finite loss
    with the step and the likely cause."""
    logged: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        loss, value = step_loss(step)
        if not torch.isfinite(loss):
            raise UnilensError(
                f"{desc} loss became {loss.item()} at step {step + 1} (learning rate too high? lower lr)"
            )
        optimizer.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        scheduler.step()
        logged.append(value)
        bar.set_postfix({desc: f"{np.mean(logged[-20:]):.4f}"})
    return logged
