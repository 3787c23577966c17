"""Activation sets: pooled residual-stream activations of many examples, per site, with tidy metadata.

Contexts:
    understand  <bos> USER: <boi> [input image] <eoi> question ASSISTANT:    (a test or train VQA record)
    generate    <bos> USER: prompt ASSISTANT: phrase <boi> [target image, teacher-forced] <eoi>
Position groups are selected by tag name ("image", "question", "gen_prompt", "gen_image"), never by index, or
are "prompt_end": the prompt's last position, where the model predicts the answer's first token, or are a drawn
item's region ("weather_region", "battery_region"): the image tokens whose grid cells hold that item in each
record's own watch (it sits in a different corner from image to image), so a probe there reads the icon's tokens
rather than an average over the whole image (the pooling knows where the item is, so the item's corner read there
says nothing about the model: probe what the item is). With `asking`, the
understanding prompt is the one of the turn that asks that question (earlier turns with their true answers), so
"prompt_end" is where that answer is read out.
Site "adapter" is the input adapter's output (the paper's probe site): vision_in for understanding images,
gen_in for generation images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.generate import question_prompts
from models.sequence import TAG, TAGS, Batch, Encoder, collate
from models.unified import grid_side
from probes.hooks import HookedVLM, resid_name
from tasks.render import region_slots
from tasks.world import Watch

DEFAULT_GROUP = {"understand": "image", "generate": "gen_image"}
PROMPT_END = "prompt_end"
REGION_GROUPS = {"weather_region": "weather", "battery_region": "battery"}  # group -> the drawn item it covers
POSITION_GROUPS = (*TAGS[1:], PROMPT_END, *REGION_GROUPS)  # every tag but padding, the answer's position, regions
# the groups the input adapter's output (site "adapter") covers: it has an output at image tokens only
IMAGE_GROUPS = ("image", "gen_image", *REGION_GROUPS)
# the question (tasks.templates attribute) whose answer a probed attribute is read from
QUESTION_OF = {
    "weather": "weather",
    "weather_pos": "weather_pos",
    "battery_pos": "battery_pos",
    "battery": "battery",
    "battery_decile": "battery",
    "hour": "time",
    "minute": "time",
}


@dataclass
class ActivationSet:
    sites: list[str]
    X: dict[str, np.ndarray]  # site -> (N, d_model), memory-mapped when streamed to disk
    meta: pd.DataFrame  # one row per example: image, context, group, and the watch's attributes

    def labels(self, attribute: str) -> np.ndarray:
        return self.meta[attribute].to_numpy()

    def subset(self, mask: np.ndarray) -> ActivationSet:
        return ActivationSet(
            self.sites, {s: np.asarray(x)[mask] for s, x in self.X.items()}, self.meta[mask].reset_index(drop=True)
        )


def layer_sites(n_layers: int, where: str = "post") -> list[str]:
    return ["adapter", *(resid_name(layer, where) for layer in range(n_layers))]


def asks(record: dict, question: str) -> bool:
    return any(turn.get("attribute") == question for turn in record["conversations"])


def _sequences(encoder: Encoder, records: list[dict], context: str, asking: str | None = None) -> list:
    if context == "understand":
        prompts = [question_prompts(encoder, r) for r in records]
        if asking is None:
            return [p[0][0] for p in prompts]
        chosen = [next((seq for seq, attribute, _ in p if attribute == asking), None) for p in prompts]
        missing = [r["id"] for r, seq in zip(records, chosen, strict=True) if seq is None]
        if missing:
            raise ValueError(f"{len(missing)} records never ask '{asking}' (e.g. {missing[0]}): keep those that do")
        return chosen
    if asking is not None:
        raise ValueError("`asking` picks an understanding turn; generation records have none")
    return [encoder.record(r) for r in records]


def group_mask(tags: torch.Tensor, group: str) -> torch.Tensor:
    """(batch, length) 0/1 mask of the positions a group pools; sequences are padded on the right."""
    if group not in POSITION_GROUPS:
        raise ValueError(f"unknown position group '{group}'; choose among {list(POSITION_GROUPS)}")
    if group in REGION_GROUPS:
        raise ValueError(f"'{group}' depends on each record's watch: use region_token_mask(records, ...)")
    if group == PROMPT_END:
        last = (tags != TAG["pad"]).sum(1) - 1
        return torch.nn.functional.one_hot(last, tags.shape[1]).float()
    return (tags == TAG[group]).float()


def region_token_mask(records: list[dict], group: str, n_tokens: int, order: str = "raster") -> torch.Tensor:
    """(batch, n_tokens) 0/1 mask over one image's tokens, in the model's token order ("raster", or "transposed":
    column by column), of the tokens whose grid cells hold the group's item in each record's watch."""
    if group not in REGION_GROUPS:
        raise ValueError(f"unknown region group '{group}'; choose among {list(REGION_GROUPS)}")
    side = grid_side(n_tokens, f"the '{group}' position group")
    mask = torch.zeros(len(records), n_tokens)
    for row, record in enumerate(records):
        if "watch" not in record:
            raise ValueError(f"record {record.get('id')} has no watch: '{group}' needs the world's labels")
        slots = region_slots(Watch.from_dict(record["watch"]), REGION_GROUPS[group], side)
        if order == "transposed":  # raster cell (r, c) sits at token c * side + r
            slots = [(s % side) * side + s // side for s in slots]
        mask[row, slots] = 1.0
    return mask


def image_token_mask(tags: torch.Tensor, context: str, token_mask: torch.Tensor) -> torch.Tensor:
    """Spread a per-token image mask onto the sequence positions of each record's one image."""
    image = tags == TAG[DEFAULT_GROUP[context]]
    per_row = image.sum(1)
    if not torch.all(per_row == token_mask.shape[1]):
        raise ValueError(f"expected one image of {token_mask.shape[1]} tokens per sequence, found {per_row.tolist()}")
    mask = torch.zeros(tags.shape, dtype=torch.float32, device=tags.device)
    mask[image] = token_mask.reshape(-1).to(tags.device)  # boolean indexing walks rows in order, then positions
    return mask


def watch_labels(watch: Watch) -> dict:
    """The attributes probes ask about, with the nuisance the control task keys on (face-colour bin)."""
    return {
        "weather": watch.weather,
        "weather_pos": watch.weather_pos,
        "battery_pos": watch.battery_pos,
        "battery": watch.battery,
        "battery_decile": min(watch.battery // 10, 9),
        "hour": watch.hour % 12,
        "minute": watch.minute,
        "face_bin": "".join(str(c * 3 // 256) for c in watch.face_color),
    }


def _meta_row(record: dict, context: str, group: str, asking: str | None) -> dict:
    prompt = record["conversations"][0]
    return {
        "image": record["image"],
        "context": context,
        "group": group,
        "asking": asking or "",
        **watch_labels(Watch.from_dict(record["watch"])),
        "prompted": ",".join(prompt.get("attributes", [])) if context == "generate" else "",
    }


@torch.no_grad()
def collect(
    model,
    records: list[dict],
    und_space,
    gen_space,
    encoder: Encoder,
    context: str,
    group: str | None = None,
    where: str = "post",
    batch_size: int = 32,
    store: str | Path | None = None,
    hooks: Callable[[Batch, int], list] | None = None,
    asking: str | None = None,
) -> ActivationSet:
    """Mean-pool each site's activations over the `group` positions of every record (site "adapter" only for image
    groups: elsewhere the adapter has no output). `hooks(batch, start)` may return (site, fn) interventions to apply
    while collecting that batch (`start`: its first record's index).
    `asking` (understanding only): prompt each record up to the turn that asks this question."""
    group = group or DEFAULT_GROUP[context]
    hooked = HookedVLM(model)
    names = layer_sites(hooked.n_layers, where)[1:]
    sites = ["adapter", *names] if group in IMAGE_GROUPS else names
    seqs = _sequences(encoder, records, context, asking)
    n, d = len(records), model.d_model
    X = {s: _array(store, s, (n, d)) for s in sites}
    device = next(model.parameters()).device
    n_tokens = (und_space if context == "understand" else gen_space).num_tokens
    order = model.cfg.image_order if context == "understand" else "raster"  # generated images are always raster
    for start in range(0, n, batch_size):
        chunk = seqs[start : start + batch_size]
        batch = collate(chunk, und_space, gen_space, encoder.pad_id).to(device)
        with hooked.hooks(hooks(batch, start) if hooks else []):
            _, cache = hooked.run_with_cache(batch, names)
        if group in REGION_GROUPS:
            token_mask = region_token_mask(records[start : start + len(chunk)], group, n_tokens, order)
            mask = image_token_mask(batch.tags, context, token_mask)
        else:
            token_mask = None
            mask = group_mask(batch.tags, group)
        if mask.sum(1).min() == 0:
            raise ValueError(f"some {context} sequences have no '{group}' positions")
        weights = mask / mask.sum(1, keepdim=True)
        for name in names:
            X[name][start : start + len(chunk)] = torch.einsum("bl,bld->bd", weights, cache[name].float()).cpu().numpy()
        if "adapter" in X:
            X["adapter"][start : start + len(chunk)] = _adapter_pool(model, batch, context, token_mask)
    meta = pd.DataFrame([_meta_row(r, context, group, asking) for r in records])
    return ActivationSet(sites, X, meta)


def _adapter_pool(model, batch, context: str, token_mask: torch.Tensor | None = None) -> np.ndarray:
    """The input adapter's output, averaged per image over the tokens `token_mask` (batch, tokens) keeps, or over
    all of them (a plain mean, so whole-image sets stay bit for bit what they were)."""
    b = batch.ids.shape[0]
    out = model.und_embed(batch.und_inputs) if context == "understand" else model.gen_embed(batch.gen_inputs)
    out = out.reshape(b, -1, model.d_model)
    if token_mask is None:
        return out.mean(1).float().cpu().numpy()
    weights = token_mask / token_mask.sum(1, keepdim=True)
    return torch.einsum("bt,btd->bd", weights.to(out.device), out.float()).cpu().numpy()


def _array(store: str | Path | None, site: str, shape: tuple[int, int]) -> np.ndarray:
    if store is None:
        return np.zeros(shape, dtype=np.float32)
    folder = Path(store)
    folder.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(folder / f"{site}.npy", mode="w+", dtype=np.float32, shape=shape)
