"""Cross-model patching: where does a mixed-trained model keep what an understanding-only model lacks?

Donor and recipient are two trained models of one variant over one base LLM (e.g. mixed and understanding-only).
On each test question the recipient runs with the donor's residual stream copied in at one layer and one position
group; layer "adapter" (-1) copies the donor's embeddings, i.e. its input adapter's output at image positions.
If copying at the adapter already gives the recipient the donor's answers, the knowledge sits in the adapter; if
only copies at later LLM layers do, it sits in the LLM. The score is multiple choice over the first answer token
among candidate values (optionally only the held-out ones).

Activations carry everything computed upstream, so a copy at layer L also hands over what the donor's earlier
layers did. Weight swaps isolate one component: group "weights" runs the recipient with the donor's LoRA update
of block L only (layer "adapter": the donor's input adapter, image delimiters and input normalisation), and
condition "all_lora" with every block's LoRA update from the donor. Both models must share the base LLM, so the
only difference inside a block is its LoRA update.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch

from models.generate import collate_prompts, question_prompts
from models.sequence import Encoder
from probes.hooks import HookedVLM, resid_name
from probes.patching import group_mask
from unilens.errors import UnilensError

EMBED = "blocks.0.hook_resid_pre"


def check_compatible(donor, recipient) -> None:
    a, b = donor.model.cfg, recipient.model.cfg
    if a.variant != b.variant:
        raise UnilensError(f"cross-model patching needs one variant; donor is {a.variant}, recipient {b.variant}")
    if len(donor.model.blocks) != len(recipient.model.blocks) or donor.model.d_model != recipient.model.d_model:
        raise UnilensError("cross-model patching needs the same LLM shape in donor and recipient")
    if donor.tokenizer.get_vocab() != recipient.tokenizer.get_vocab():
        raise UnilensError("donor and recipient use different tokenizers: their positions would not line up")


ADAPTER_PARTS = ("vision_in.", "boi", "eoi", "norm_in.", "und_pos.", "und_slot.")
_BLOCK = re.compile(r"\.layers\.(\d+)\.")


def swappable_parts(model) -> dict[int, list[str]]:
    """Parameter/buffer names per swappable part: -1 the understanding input path, L the LoRA tensors of block L."""
    parts: dict[int, list[str]] = {-1: []}
    for name, _ in [*model.named_parameters(), *model.named_buffers()]:
        if name.startswith(ADAPTER_PARTS):
            parts[-1].append(name)
        elif "lora_" in name:
            match = _BLOCK.search(name)
            if match is None:
                raise UnilensError(f"LoRA tensor {name} names no decoder layer: cannot tell which block it adapts")
            parts.setdefault(int(match.group(1)), []).append(name)
    return parts


@contextmanager
def swapped(recipient, donor, names: list[str]) -> Iterator[None]:
    """Inside the block the recipient holds the donor's tensors `names`; its own are restored afterwards."""
    mine = dict(recipient.state_dict(keep_vars=True))
    theirs = donor.state_dict()
    missing = [n for n in names if n not in mine or n not in theirs]
    if missing:
        raise UnilensError(f"donor and recipient do not both have {missing[:3]}: train both with the same preset")
    saved = {n: mine[n].detach().clone() for n in names}
    try:
        with torch.no_grad():
            for n in names:
                mine[n].copy_(theirs[n])
        yield
    finally:
        with torch.no_grad():
            for n in names:
                mine[n].copy_(saved[n])


def has_lora(model) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def same_base_llm(a, b) -> bool:
    theirs = dict(b.named_parameters())
    return all(
        name in theirs and torch.equal(p, theirs[name])
        for name, p in a.named_parameters()
        if name.startswith("llm.") and "lora_" not in name
    )


def first_tokens(encoder: Encoder, values: list[str]) -> list[int]:
    ids = [encoder.text(v)[0] for v in values]
    if len(set(ids)) != len(ids):
        raise UnilensError(f"candidate answers {values} share a first token: first-token choice cannot separate them")
    return ids


def prompts_about(encoder: Encoder, records: list[dict], attribute: str, values: list[str]) -> tuple[list, list]:
    """Every VQA turn asking `attribute` whose true value is in `values` (earlier turns with their true answers)."""
    seqs, rows = [], []
    for rec in records:
        truth = str(rec["watch"][attribute])
        if truth not in values:
            continue
        for seq, attr, turn in question_prompts(encoder, rec):
            if attr == attribute:
                seqs.append(seq)
                rows.append({"image": rec["image"], "turn": turn, "value": truth})
    return seqs, rows


@torch.no_grad()
def cross_model_sweep(
    donor,
    recipient,
    records: list[dict],
    und_space,
    gen_space,
    attribute: str,
    candidates: list[str],
    groups: tuple[str, ...] = ("image", "all"),
    batch_size: int = 32,
    weights: bool = False,
) -> pd.DataFrame:
    """Per question and (layer, group): the recipient's choice among `candidates` with the donor's activations
    copied in, plus the unpatched donor and recipient (condition donor / recipient, layer -2). With `weights`,
    also the recipient with one part's weights from the donor (group "weights") and with all LoRA updates
    (condition all_lora, layer -2)."""
    check_compatible(donor, recipient)
    parts = swappable_parts(recipient.model) if weights else {}
    if weights:
        if set(parts) != set(swappable_parts(donor.model)):
            raise UnilensError("weight swaps need LoRA in the same blocks of donor and recipient (same preset)")
        if len(parts) == 1:
            raise UnilensError("weight swaps need LoRA models (preset lora or lora-layers); these have no LoRA")
        if not same_base_llm(donor.model, recipient.model):
            raise UnilensError("weight swaps need donor and recipient trained from the same base LLM checkpoint")
    encoder = Encoder(recipient.tokenizer, und_space.num_tokens)
    seqs, rows = prompts_about(encoder, records, attribute, candidates)
    if not seqs:
        raise UnilensError(f"no test questions about '{attribute}' with values {candidates}")
    cand_ids = torch.tensor(first_tokens(encoder, candidates))
    n_layers = len(recipient.model.blocks)
    sites = [(-1, EMBED)] + [(layer, resid_name(layer, "post")) for layer in range(n_layers)]
    h_donor, h_recipient = HookedVLM(donor.model), HookedVLM(recipient.model)
    device = next(recipient.model.parameters()).device
    out = []
    for lo in range(0, len(seqs), batch_size):
        batch = collate_prompts(seqs[lo : lo + batch_size], und_space, gen_space, encoder.pad_id).to(device)
        meta = rows[lo : lo + batch_size]

        def pick(model, batch=batch) -> np.ndarray:
            logits = model.text_logits(model.hidden(batch)[:, -1])[:, cand_ids.to(device)]
            return logits.argmax(-1).cpu().numpy()

        results = {("donor", -2, "none"): pick(donor.model), ("recipient", -2, "none"): pick(recipient.model)}
        _, cache = h_donor.run_with_cache(batch, [s for _, s in sites])
        for layer, site in sites:
            for group in groups:
                if layer == -1 and group not in ("image", "all"):
                    continue
                mask = group_mask(batch, group)[..., None]
                source = cache[site]

                def replace(x, _name, mask=mask, source=source):
                    return torch.where(mask, source.to(x.dtype), x)

                with h_recipient.hooks([(site, replace)]):
                    results[("patched", layer, group)] = pick(recipient.model)
        for layer, names in parts.items():
            with swapped(recipient.model, donor.model, names):
                results[("patched", layer, "weights")] = pick(recipient.model)
        if parts:
            every_lora = [n for layer, names in parts.items() if layer >= 0 for n in names]
            with swapped(recipient.model, donor.model, every_lora):
                results[("all_lora", -2, "weights")] = pick(recipient.model)
        for (condition, layer, group), choice in results.items():
            for m, c in zip(meta, choice, strict=True):
                out.append(
                    {
                        **m,
                        "condition": condition,
                        "layer": layer,
                        "group": group,
                        "choice": candidates[int(c)],
                        "correct": float(candidates[int(c)] == m["value"]),
                    }
                )
    return pd.DataFrame(out)
