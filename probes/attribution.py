"""Attributions: which image tokens, and which (site, position group) cells, move the answer.

integrated_gradients   captum IG over the image embeddings for the answer logit difference, with the mean image
                       embedding as baseline (a zero baseline is meaningless for RMSNorm models, which are nearly
                       scale-invariant); returns per-image-token attributions and the convergence delta.
attribution_patching   one forward and backward pass on the corrupt input estimates every cell's denoising effect
                       at once: (clean - corrupt activation) . d metric / d activation, summed over the cell's
                       positions. A first-order estimate: check its top cells with true patching.
"""

from __future__ import annotations

import pandas as pd
import torch
from captum.attr import IntegratedGradients

from models.sequence import UND_IMAGE, Batch
from probes.hooks import HookedVLM
from probes.patching import Cell, answer_logit_diff, group_mask, repeat_batch


def _logit_diff_from_embeds(model, batch: Batch, good: torch.Tensor, bad: torch.Tensor):
    def forward(embeds: torch.Tensor) -> torch.Tensor:
        hidden = model.hidden(batch, inputs_embeds=embeds)
        return answer_logit_diff(model, batch, good, bad, hidden)

    return forward


def integrated_gradients(
    model, batch: Batch, good: torch.Tensor, bad: torch.Tensor, n_steps: int = 50
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: attribution of the answer logit difference to each image token (B, T), and the convergence
    delta (B,) = sum of attributions - (f(input) - f(baseline)). The baseline replaces every image token by the
    batch's mean image-token embedding; text embeddings are the same in input and baseline."""
    model.eval()
    with torch.no_grad():
        embeds = model.embed(batch)
    image = batch.kind == UND_IMAGE
    if not image.any(1).all():
        raise ValueError("every example needs input-image positions to attribute to")
    baseline = embeds.clone()
    baseline[image] = embeds[image].mean(0)

    def batched(x: torch.Tensor) -> torch.Tensor:
        # captum stacks the interpolation steps along the batch dimension
        reps = x.shape[0] // embeds.shape[0]
        big = repeat_batch(batch, reps)
        return _logit_diff_from_embeds(model, big, good.repeat(reps), bad.repeat(reps))(x)

    ig = IntegratedGradients(batched)
    attr, delta = ig.attribute(
        embeds, baselines=baseline, n_steps=n_steps, return_convergence_delta=True, internal_batch_size=None
    )
    per_token = attr.sum(-1)  # (B, L)
    b, t = embeds.shape[0], int(image[0].sum())
    return per_token[image].reshape(b, t).detach(), delta.detach()


def attribution_patching(
    model, clean: Batch, corrupt: Batch, good: torch.Tensor, bad: torch.Tensor, cells: list[Cell]
) -> pd.DataFrame:
    """Estimated denoising effect of every cell, per example, from gradients on the corrupt run."""
    hooked = HookedVLM(model)
    sites = sorted({c.site for c in cells})
    with torch.no_grad():
        _, clean_cache = hooked.run_with_cache(clean, sites)
        clean_diff = answer_logit_diff(model, clean, good, bad, model.hidden(clean))
    with torch.enable_grad():
        embeds = model.embed(corrupt).detach().requires_grad_(True)
        kept: dict[str, torch.Tensor] = {}

        def keep(x: torch.Tensor, name: str) -> torch.Tensor:
            x = x.clone() if name == "blocks.0.hook_resid_pre" else x  # that tensor is the embeddings themselves
            x.retain_grad()
            kept[name] = x
            return x

        with hooked.hooks([(s, keep) for s in sites]):
            hidden = model.hidden(corrupt, inputs_embeds=embeds)
        corrupt_diff = answer_logit_diff(model, corrupt, good, bad, hidden)
        corrupt_diff.sum().backward()  # examples are independent: each row's gradient is its own
    rows = []
    for cell in cells:
        act = kept[cell.site]
        mask = group_mask(corrupt, cell.group)[..., None].to(act.dtype)
        est = ((clean_cache[cell.site] - act.detach()) * act.grad * mask).sum((1, 2))
        for i in range(est.shape[0]):
            rows.append(
                {
                    "site": cell.site,
                    "group": cell.group,
                    "example": i,
                    "clean": clean_diff[i].item(),
                    "corrupt": corrupt_diff[i].item(),
                    "estimated_change": est[i].item(),
                }
            )
    df = pd.DataFrame(rows)
    df["estimated_effect"] = df["estimated_change"] / (df["clean"] - df["corrupt"])
    return df
