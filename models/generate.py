"""Decoding with a KV cache, batched: greedy text answers (understanding) and image tokens (generation).

`use_cache=False` recomputes the whole prefix at every step; it exists to prove the cache changes nothing and to
measure what the cache buys (bench/decode_speed.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.sequence import GEN_IMAGE, Batch, Encoder, Sequence, collate
from models.unified import UnifiedVLM, positions
from tasks.templates import unconditional
from unilens.errors import UnilensError


@dataclass
class Prefix:
    """The state after a prompt: the cache (or the whole embedded prefix) and the mask so far."""

    emb: torch.Tensor
    mask: torch.Tensor
    past: object | None
    last_hidden: torch.Tensor


def _run(
    model: UnifiedVLM, emb: torch.Tensor, mask: torch.Tensor, past, use_cache: bool
) -> tuple[torch.Tensor, object]:
    pos = positions(mask)[:, -emb.shape[1] :]
    out = model.decoder(
        inputs_embeds=emb, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=use_cache
    )
    return out.last_hidden_state, out.past_key_values if use_cache else None


@torch.no_grad()
def start(model: UnifiedVLM, batch: Batch, use_cache: bool = True) -> Prefix:
    emb = model.embed(batch)
    mask = batch.attention_mask.long()
    h, past = _run(model, emb, mask, None, use_cache)
    return Prefix(emb, mask, past, h[:, -1])


@torch.no_grad()
def step(model: UnifiedVLM, prefix: Prefix, next_emb: torch.Tensor, use_cache: bool = True) -> Prefix:
    """Append one position per row (next_emb: (B, d)) and return the new last hidden state."""
    mask = torch.cat([prefix.mask, torch.ones_like(prefix.mask[:, :1])], dim=1)
    emb = torch.cat([prefix.emb, next_emb[:, None]], dim=1) if not use_cache else prefix.emb
    if use_cache:
        h, past = _run(model, next_emb[:, None], mask, prefix.past, True)
    else:
        h, past = _run(model, emb, mask, None, False)
    return Prefix(emb, mask, past, h[:, -1])


@torch.no_grad()
def greedy_answers(
    model: UnifiedVLM, batch: Batch, eos_id: int, max_new_tokens: int = 16, use_cache: bool = True
) -> list[list[int]]:
    """Greedy continuation of left-padded prompts until </s>; returns the new token ids per row."""
    prefix = start(model, batch, use_cache)
    embed = model.base_llm.get_input_embeddings()
    out: list[list[int]] = [[] for _ in range(batch.ids.shape[0])]
    done = torch.zeros(batch.ids.shape[0], dtype=torch.bool, device=batch.ids.device)
    for _ in range(max_new_tokens):
        token = model.text_logits(prefix.last_hidden).argmax(-1)
        for i, t in enumerate(token.tolist()):
            if not done[i] and t != eos_id:
                out[i].append(t)
        done |= token == eos_id
        if done.all():
            break
        prefix = step(model, prefix, embed(token), use_cache)
    return out


@torch.no_grad()
def generate_image_tokens(
    model: UnifiedVLM,
    batch: Batch,
    num_tokens: int,
    gen_space,
    temperature: float = 0.0,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    guidance: float = 1.0,
    unconditional: Batch | None = None,
) -> torch.Tensor:
    """From prompts ending in <boi>, predict `num_tokens` image tokens: codes (B, T) for VQ, features (B, T, D)
    in the encoder's own (undistorted) space for semantic outputs.

    Classifier-free guidance: with `guidance` s != 1 and `unconditional` (the same rows' prompts naming no
    attribute), each step's head output is u + s (c - u), c under the prompt and u without it (logits for VQ, the
    regression output for features); both streams are then fed the chosen token. s = 1 is plain decoding."""
    guided = guidance != 1.0
    if guided and unconditional is None:
        raise UnilensError("guidance != 1 needs the unconditional prompts (models.generate.unconditional_prompts)")
    prefix = start(model, batch, use_cache)
    free = start(model, unconditional, use_cache) if guided else None
    outs = []
    for t in range(num_tokens):
        head = model.gen_head(prefix.last_hidden).float()
        if guided:
            plain = model.gen_head(free.last_hidden).float()
            head = plain + guidance * (head - plain)
        if model.gen_space == "vq":
            if temperature > 0:
                probs = torch.softmax(head / temperature, dim=-1)
                code = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                code = head.argmax(-1)
            outs.append(code)
            vec = gen_space.codebook.to(head.device)[code]
            next_in = model.gen_embed(vec)
        else:
            head = model.at_target_scale(head)
            outs.append(model.gen_output_to_space(head))
            next_in = model.gen_in(head)  # the head predicts the (distorted) space the adapter reads
        if t + 1 < num_tokens:
            next_in = model.with_slots(next_in, "gen", slot=t).to(prefix.emb.dtype)
            prefix = step(model, prefix, next_in, use_cache)
            if guided:
                free = step(model, free, next_in, use_cache)
    return torch.stack(outs, dim=1)


def generation_prompt(encoder: Encoder, record: dict) -> Sequence:
    """<bos> USER: prompt ASSISTANT: phrase <boi>: everything before the first image token."""
    seq = encoder.record(record)
    return seq.prefix(seq.kind.index(GEN_IMAGE), "generate", with_image=False)


def unconditional_prompts(encoder: Encoder, records: list[dict]) -> list[Sequence]:
    """The generation prompts of `records` with requests that name no attribute (for classifier-free guidance)."""
    return [generation_prompt(encoder, unconditional(r)) for r in records]


def question_prompts(encoder: Encoder, record: dict) -> list[tuple[Sequence, str, int]]:
    """One prompt per VQA turn, earlier turns with their true answers: (prompt, attribute, turn)."""
    full = encoder.record(record)
    return [
        (full.prefix(start, "understand"), attribute, turn)
        for turn, (start, _end, attribute) in enumerate(full.answers)
    ]


def collate_prompts(seqs: list[Sequence], und_space, gen_space, pad_id: int) -> Batch:
    return collate(seqs, und_space, gen_space, pad_id, left_pad=True)
