"""Attributions: which image tokens, and which (site, position group) cells, move the answer.

integrated_gradients   captum IG over the image embeddings for the answer logit difference, with the mean image
                       embedding as baseline (a zero baseline is meaningless for RMSNorm models, which are nearly
                       scale-invariant); returns per-image-token attributions and the convergence delta.
layer_integrated_gradients
                       captum LayerIntegratedGradients to each LLM block's output (the residual stream after the
                       block; captum integrates along the straight line between that block's outputs on the
                       baseline and on the input): per block and position, how much of the answer's logit
                       difference flows through there. A block's output is a complete cut of the network, so each
                       block's attributions sum to the same f(input) - f(baseline). One block per call: captum's
                       multi-layer mode replaces every layer's output at once, which cuts sequential blocks apart.
attribution_patching   one forward and backward pass on the corrupt input estimates every cell's denoising effect
                       at once: (clean - corrupt activation) . d metric / d activation, summed over the cell's
                       positions. A first-order estimate: check its top cells with true patching.
"""

from __future__ import annotations

import pandas as pd
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients

from models.sequence import UND_IMAGE, Batch
from probes.hooks import HookedVLM
from probes.patching import Cell, answer_logit_diff, group_mask, repeat_batch


def _logit_diff_from_embeds(model, batch: Batch, good: torch.Tensor, bad: torch.Tensor):
    def forward(embeds: torch.Tensor) -> torch.Tensor:
        hidden = model.hidden(batch, inputs_embeds=embeds)
        return answer_logit_diff(model, batch, good, bad, hidden)

    return forward


def _mean_image_baseline(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The input embeddings, and the same with every image token replaced by the batch's mean image token."""
    with torch.no_grad():
        embeds = model.embed(batch)
    image = batch.kind == UND_IMAGE
    if not image.any(1).all():
        raise ValueError("every example needs input-image positions to attribute to")
    baseline = embeds.clone()
    baseline[image] = embeds[image].mean(0)
    return embeds, baseline


def _stacked_forward(model, batch: Batch, good: torch.Tensor, bad: torch.Tensor):
    """The logit difference as a function of embeddings for captum, which stacks interpolation steps along the
    batch dimension."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        reps = x.shape[0] // batch.ids.shape[0]
        big = repeat_batch(batch, reps)
        return _logit_diff_from_embeds(model, big, good.repeat(reps), bad.repeat(reps))(x)

    return forward


def integrated_gradients(
    model, batch: Batch, good: torch.Tensor, bad: torch.Tensor, n_steps: int = 50
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: attribution of the answer logit difference to each image token (B, T), and the convergence
    delta (B,) = sum of attributions - (f(input) - f(baseline)). The baseline replaces every image token by the
    batch's mean image-token embedding; text embeddings are the same in input and baseline."""
    model.eval()
    embeds, baseline = _mean_image_baseline(model, batch)
    ig = IntegratedGradients(_stacked_forward(model, batch, good, bad))
    attr, delta = ig.attribute(
        embeds, baselines=baseline, n_steps=n_steps, return_convergence_delta=True, internal_batch_size=None
    )
    per_token = attr.sum(-1)  # (B, L)
    image = batch.kind == UND_IMAGE
    b, t = embeds.shape[0], int(image[0].sum())
    return per_token[image].reshape(b, t).detach(), delta.detach()


def layer_integrated_gradients(
    model, batch: Batch, good: torch.Tensor, bad: torch.Tensor, n_steps: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, block and position: attribution of the answer logit difference to the block's output, summed
    over features (B, n_layers, L); and f(input) - f(baseline) per example (B,), which every block's attributions
    sum to up to the integration error."""
    model.eval()
    embeds, baseline = _mean_image_baseline(model, batch)
    forward = _stacked_forward(model, batch, good, bad)
    per_block = []
    for block in model.blocks:
        lig = LayerIntegratedGradients(forward, block)
        attr = lig.attribute(embeds, baselines=baseline, n_steps=n_steps, internal_batch_size=None)
        per_block.append(attr.sum(-1))
    per_position = torch.stack(per_block, dim=1)  # (B, n_layers, L)
    with torch.no_grad():
        total = forward(embeds) - forward(baseline)
    return per_position.detach(), total.detach()


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
