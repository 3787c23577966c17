"""Activation patching as small functions over hooks.

Denoising: run the corrupt input and copy in the clean run's activation at one site and one position group; the
effect is normalised (patched - corrupt) / (clean - corrupt) of a logit difference, so 1 means "this site at
these positions carries everything that separates clean from corrupt" and 0 means "nothing".
Noising is the reverse (clean input, corrupt activation). Many (site, group) cells are patched in one forward
pass: the batch is repeated once per cell and each repeat patches only its own cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from models.sequence import TAG, Batch
from probes.hooks import HookedVLM


@dataclass(frozen=True)
class Cell:
    site: str
    group: str  # a position tag name ("image", "question", ...) or "all"


def group_mask(batch: Batch, group: str) -> torch.Tensor:
    """(B, L) positions of a tag group; 'all' is every real position."""
    return batch.attention_mask if group == "all" else batch.tags == TAG[group]


def repeat_batch(batch: Batch, k: int) -> Batch:
    """The batch stacked k times (rows of repeat j are j*B .. (j+1)*B - 1)."""
    cat = {}
    for name, value in batch.__dict__.items():
        if isinstance(value, torch.Tensor):
            cat[name] = value.repeat(k, *([1] * (value.dim() - 1)))
        elif value is None:
            cat[name] = None
        else:
            cat[name] = value * k
    return Batch(**cat)


def answer_logit_diff(model, batch: Batch, good: torch.Tensor, bad: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Logit of the right first answer token minus the wrong one, at each row's last position."""
    logits = model.text_logits(hidden[:, -1])
    return logits.gather(1, good[:, None])[:, 0] - logits.gather(1, bad[:, None])[:, 0]


@torch.no_grad()
def patch_sweep(
    model,
    clean: Batch,
    corrupt: Batch,
    good: torch.Tensor,
    bad: torch.Tensor,
    cells: list[Cell],
    mode: str = "denoise",
    batch_cells: int | None = None,
) -> pd.DataFrame:
    """Normalised patching effect of every cell, per example. Clean and corrupt must align position by position
    (same tokens and tags; only the image or one word differs), as pairs built from one watch do."""
    if clean.ids.shape != corrupt.ids.shape or not torch.equal(clean.tags, corrupt.tags):
        raise ValueError("clean and corrupt batches must have the same shape and position tags")
    hooked = HookedVLM(model)
    sites = sorted({c.site for c in cells})
    flat = [s for s in sites if not s.startswith("blocks.")]
    if flat:
        raise ValueError(
            f"sites {flat} are per image token, not per position: patch blocks.0.hook_resid_pre at the 'image' "
            "group to patch the input adapter's output"
        )
    source, target = (clean, corrupt) if mode == "denoise" else (corrupt, clean)
    _, src_cache = hooked.run_with_cache(source, sites)
    base = {
        name: answer_logit_diff(model, b, good, bad, model.hidden(b))
        for name, b in (("clean", clean), ("corrupt", corrupt))
    }
    b = clean.ids.shape[0]
    per = batch_cells or len(cells)
    rows = []
    for start in range(0, len(cells), per):
        chunk = cells[start : start + per]
        big = repeat_batch(target, len(chunk))
        hooks = []
        for site in {c.site for c in chunk}:
            rows_mask = torch.zeros(len(chunk) * b, *clean.ids.shape[1:], dtype=torch.bool)
            for j, cell in enumerate(chunk):
                if cell.site == site:
                    rows_mask[j * b : (j + 1) * b] = group_mask(target, cell.group)
            source_act = src_cache[site].repeat(len(chunk), 1, 1)
            hooks.append((site, _replace(rows_mask, source_act)))
        with hooked.hooks(hooks):
            diff = answer_logit_diff(model, big, good.repeat(len(chunk)), bad.repeat(len(chunk)), model.hidden(big))
        for j, cell in enumerate(chunk):
            patched = diff[j * b : (j + 1) * b]
            for i in range(b):
                rows.append(
                    {
                        "site": cell.site,
                        "group": cell.group,
                        "example": i,
                        "mode": mode,
                        "clean": base["clean"][i].item(),
                        "corrupt": base["corrupt"][i].item(),
                        "patched": patched[i].item(),
                    }
                )
    df = pd.DataFrame(rows)
    start_value, end_value = ("corrupt", "clean") if mode == "denoise" else ("clean", "corrupt")
    # denoise: 1 = the cell restores the clean answer; noise: 1 = the cell alone destroys it
    df["effect"] = (df["patched"] - df[start_value]) / (df[end_value] - df[start_value])
    return df


def _replace(mask: torch.Tensor, source: torch.Tensor):
    def fn(x: torch.Tensor, name: str) -> torch.Tensor:
        return torch.where(mask[..., None].to(x.device), source.to(x.dtype).to(x.device), x)

    return fn
