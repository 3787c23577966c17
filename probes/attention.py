"""Where the answer looks: attention from the position that reads out an answer to a drawn item's image tokens.

A probe can find an attribute in the image tokens and not at the answer's position (the model holds it and never
moves it). The mover would be attention: some head whose query at the answer's position puts weight on the tokens
that draw the item. For each block and head this measures, per question, the attention mass from the answer's
position ("prompt_end" of the turn that asks the question) to the item's own image tokens and to the whole image,
and what the item's tokens would get if the head spread its image mass evenly (their share of the image's tokens).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import torch

from models.evaluate import answered, span_scores
from models.sequence import TAG, Encoder, collate
from probes.activations import (
    PROMPT_END,
    REGION_GROUPS,
    _sequences,
    asks,
    group_mask,
    image_token_mask,
    region_token_mask,
)
from probes.hooks import HookedVLM
from tasks.world import ATTRIBUTE_VALUES, Watch


def _asking(records: list[dict], question: str, limit: int) -> list[dict]:
    """The understanding records that ask `question` (the first `limit`, 0: all)."""
    chosen = [r for r in records if r["task"] == "vqa" and asks(r, question)]
    chosen = chosen[:limit] if limit else chosen
    if not chosen:
        raise ValueError(f"no understanding record asks '{question}'")
    return chosen


def _answer_batches(
    records, und_space, gen_space, encoder: Encoder, question: str, batch_size: int, limit: int, device
):
    """The understanding records that ask `question` (the first `limit`, 0: all), prompted up to that turn, in
    batches: (records, batch, the answer's position per row)."""
    chosen = _asking(records, question, limit)
    seqs = _sequences(encoder, chosen, "understand", asking=question)
    for start in range(0, len(chosen), batch_size):
        batch = collate(seqs[start : start + batch_size], und_space, gen_space, encoder.pad_id).to(device)
        yield chosen[start : start + batch_size], batch, group_mask(batch.tags, PROMPT_END).argmax(1)


@torch.no_grad()
def answer_attention(
    model,
    records: list[dict],
    und_space,
    gen_space,
    encoder: Encoder,
    question: str,
    region: str = "weather_region",
    batch_size: int = 16,
    limit: int = 0,
) -> pd.DataFrame:
    """Tidy rows, one per record x block x head: `to_region` and `to_image`, the attention mass from the answer's
    position of `question` to the region's image tokens and to all image tokens; `even_share`, the region's share of
    the image tokens (what `to_region / to_image` is for a head that weighs the image's tokens evenly). `limit`: the
    first N records that ask the question (0: all)."""
    if region not in REGION_GROUPS:
        raise ValueError(f"unknown region '{region}'; choose among {list(REGION_GROUPS)}")
    hooked = HookedVLM(model)
    device = next(model.parameters()).device
    rows = []
    for part, batch, answer_at in _answer_batches(
        records, und_space, gen_space, encoder, question, batch_size, limit, device
    ):
        patterns = hooked.run_with_patterns(batch)
        rows_of = torch.arange(len(part), device=answer_at.device)
        image = (batch.tags == TAG["image"]).float()
        tokens = region_token_mask(part, region, und_space.num_tokens, model.cfg.image_order)
        item = image_token_mask(batch.tags, "understand", tokens)
        shares = (tokens.sum(1) / tokens.shape[1]).tolist()
        for name, pattern in patterns.items():
            layer = int(name.split(".")[1])
            rows_at_answer = pattern.float()[rows_of, :, answer_at]  # (batch, heads, keys)
            to_item = torch.einsum("bhk,bk->bh", rows_at_answer, item).cpu().numpy()
            to_image = torch.einsum("bhk,bk->bh", rows_at_answer, image).cpu().numpy()
            for i, record in enumerate(part):
                for head in range(to_item.shape[1]):
                    rows.append(
                        {
                            "image": record["image"],
                            "record": record["id"],
                            "question": question,
                            "region": region,
                            "layer": layer,
                            "head": head,
                            "to_region": float(to_item[i, head]),
                            "to_image": float(to_image[i, head]),
                            "even_share": shares[i],
                        }
                    )
    return pd.DataFrame(rows)


def _ci_columns(label: str, value: float, draws: np.ndarray) -> dict[str, float]:
    """`label` and its 95% percentile interval over bootstrap `draws`, as three columns."""
    return {
        label: float(value),
        f"{label}_lo": float(np.quantile(draws, 0.025)),
        f"{label}_hi": float(np.quantile(draws, 0.975)),
    }


def summarize_attention(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per block x head (and any model column): the mean attention to the region and to the image with 95% CIs
    over images (a bootstrap that draws images, each with all its rows); `image_share`, the part of the head's
    image attention that lands on the item (against `even_share`, what an even spread over the image's tokens puts
    there); `region_lift`, the mass on the item over that even spread (1: the head does not single the item out).
    A head that barely looks at the image can have a large lift on a negligible mass: read it beside `to_region`."""
    keys = [k for k in ("model", "question", "region", "layer", "head") if k in rows]
    rng = np.random.default_rng(seed)
    out = []
    for key, g in rows.groupby(keys, sort=True):
        per_image = g.groupby("image")[["to_region", "to_image"]].mean()
        expected = (g["to_image"] * g["even_share"]).groupby(g["image"]).mean().reindex(per_image.index)
        idx = rng.integers(0, len(per_image), size=(n_boot, len(per_image)))
        values = {c: per_image[c].to_numpy() for c in per_image}
        row = dict(zip(keys, key, strict=True))
        for c, v in values.items():
            row.update(_ci_columns(c, v.mean(), v[idx].mean(1)))
        region, image, even = values["to_region"], values["to_image"], expected.to_numpy()
        for column, num, den in (("region_lift", region, even), ("image_share", region, image)):
            draws = num[idx].sum(1) / np.maximum(den[idx].sum(1), 1e-12)
            row.update(_ci_columns(column, num.sum() / max(den.sum(), 1e-12), draws))
        row.update(even_share=float(g["even_share"].mean()), n_images=len(per_image))
        out.append(row)
    return pd.DataFrame(out)


def _zero_heads(heads: list[int], head_dim: int, where: torch.Tensor):
    """A hook_z function that zeroes the given heads' outputs at the positions `where` marks ((batch, length),
    bool)."""

    def fn(z: torch.Tensor, _name: str) -> torch.Tensor:
        z = z.clone()
        for h in heads:
            z[..., h * head_dim : (h + 1) * head_dim][where] = 0
        return z

    return fn


ABLATION_SCORINGS = ("auto", "first_token", "answer")


def _ablation_scoring(encoder: Encoder, question: str, values: list[str], scoring: str) -> str:
    """The scoring `ablate_heads` uses: "auto" is "first_token" where the values' first tokens differ, else
    "answer"."""
    if scoring not in ABLATION_SCORINGS:
        raise ValueError(f"unknown scoring '{scoring}'; choose among {list(ABLATION_SCORINGS)}")
    distinct = len({encoder.text(v)[0] for v in values}) == len(values)
    if scoring == "first_token" and not distinct:
        raise ValueError(
            f"the values of '{question}' share a first token: first-token scoring cannot tell them apart "
            "(use scoring 'answer')"
        )
    if scoring == "auto":
        return "first_token" if distinct else "answer"
    return scoring


def _first_token_scores(model, hidden: torch.Tensor, answer_at: torch.Tensor, candidates: torch.Tensor):
    """(records, values): each value's log-probability among the values by its first token at the answer's
    position."""
    logits = model.text_logits(hidden[torch.arange(len(answer_at), device=hidden.device), answer_at]).float()
    return torch.log_softmax(logits[:, candidates], dim=-1)


def _whole_answer_scores(model, hidden: torch.Tensor, labels: torch.Tensor, spans: list[tuple[int, int, int]], n: int):
    """(records, values): each value's log-probability among the values, the sum over its tokens of their
    teacher-forced log-probabilities (rows record-major: record i's values at rows i * values + j)."""
    totals = torch.tensor([logp for logp, _ in span_scores(model, hidden, labels, spans)])
    return torch.log_softmax(totals.view(n, -1), dim=-1)


def _first_token_batches(records, und_space, gen_space, encoder, question, values, batch_size, limit, device):
    """(records, batch, the positions to ablate (the answer's), a function of (model, hidden states) giving each
    record's log-probability of every value among the values by its first token)."""
    candidates = torch.tensor([encoder.text(v)[0] for v in values], device=device)
    for part, batch, answer_at in _answer_batches(
        records, und_space, gen_space, encoder, question, batch_size, limit, device
    ):
        where = torch.nn.functional.one_hot(answer_at, batch.tags.shape[1]).bool()
        yield part, batch, where, partial(_first_token_scores, answer_at=answer_at, candidates=candidates)


def _whole_answer_batches(records, und_space, gen_space, encoder, question, values, batch_size, limit, device):
    """As `_first_token_batches`, scoring each value as a whole answer: every record's prompt is followed by each
    value and the end of turn (one row per record x value), the value's log-probability is the sum over its
    tokens, teacher-forced, and the positions to ablate are all those that predict one of its tokens."""
    eos = encoder.tok.eos_token_id
    chosen = _asking(records, question, limit)
    for lo in range(0, len(chosen), batch_size):
        part = chosen[lo : lo + batch_size]
        seqs, spans = [], []
        for prompt in _sequences(encoder, part, "understand", asking=question):
            for value in values:
                seq, start = answered(prompt, encoder.text(value), eos)
                spans.append((len(seqs), start, len(seq)))
                seqs.append(seq)
        batch = collate(seqs, und_space, gen_space, encoder.pad_id).to(device)
        where = torch.zeros(batch.tags.shape, dtype=torch.bool, device=device)
        for row, start, end in spans:
            where[row, start - 1 : end - 1] = True  # the positions whose labels are the answer's tokens
        score = partial(_whole_answer_scores, labels=batch.labels, spans=spans, n=len(part))
        yield part, batch, where, score


@torch.no_grad()
def ablate_heads(
    model,
    records: list[dict],
    und_space,
    gen_space,
    encoder: Encoder,
    question: str,
    conditions: dict[str, list[tuple[int, int]]],
    batch_size: int = 16,
    limit: int = 0,
    scoring: str = "auto",
) -> pd.DataFrame:
    """Rows per record x condition: with the condition's (block, head) outputs zeroed (their `hook_z` slices, before
    the output projection) where the answer to `question` is read out, whether the true value outscores every other
    value of the question (`correct`) and its log-probability among the values (`logp_true`). `scoring`:
    "first_token" zeroes the heads at the answer's position and scores the values by their first token;
    "answer" scores each value as a whole answer, teacher-forced, with the heads zeroed at every position that
    predicts one of its tokens (needed where values share a first token, as top-left / top-right); "auto" takes
    the first where it can tell the values apart. Condition "none" (nothing zeroed) is always added: the effect of
    a condition is its difference from it, per record."""
    if question not in ATTRIBUTE_VALUES:
        raise ValueError(f"'{question}' is not a categorical question; choose among {sorted(ATTRIBUTE_VALUES)}")
    values = [str(v) for v in ATTRIBUTE_VALUES[question]]
    scoring = _ablation_scoring(encoder, question, values, scoring)
    n_layers, n_heads = len(model.blocks), model.base_llm.config.num_attention_heads
    bad = [(k, h) for heads in conditions.values() for k, h in heads if not (0 <= k < n_layers and 0 <= h < n_heads)]
    if bad:
        raise ValueError(f"no such (block, head) {bad}: this LLM has blocks 0..{n_layers - 1}, heads 0..{n_heads - 1}")
    hooked = HookedVLM(model)
    device = next(model.parameters()).device
    batches = _first_token_batches if scoring == "first_token" else _whole_answer_batches
    rows = []
    for part, batch, where, score in batches(
        records, und_space, gen_space, encoder, question, values, batch_size, limit, device
    ):
        truth = torch.tensor([values.index(str(getattr(Watch.from_dict(r["watch"]), question))) for r in part])
        for name, heads in {"none": [], **conditions}.items():
            by_layer: dict[int, list[int]] = {}
            for k, h in heads:
                by_layer.setdefault(k, []).append(h)
            fns = [
                (f"blocks.{k}.hook_z", _zero_heads(hs, model.blocks[k].self_attn.head_dim, where))
                for k, hs in by_layer.items()
            ]
            with hooked.hooks(fns):
                hidden = model.hidden(batch)
            logp = score(model, hidden).cpu()
            for i, record in enumerate(part):
                rows.append(
                    {
                        "image": record["image"],
                        "record": record["id"],
                        "question": question,
                        "scoring": scoring,
                        "condition": name,
                        "heads": " ".join(f"{k}.{h}" for k, h in heads),
                        "correct": bool(logp[i].argmax() == truth[i]),
                        "logp_true": float(logp[i, truth[i]]),
                    }
                )
    return pd.DataFrame(rows)


def summarize_ablation(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per condition (and model): accuracy and mean log-probability of the true value, and their differences from
    "none" paired per record, each with a 95% CI over images (images drawn once per replicate for every condition)."""
    keys = [k for k in ("model", "question", "scoring") if k in rows]
    out = []
    for key, g in rows.groupby(keys, sort=False) if keys else [((), rows)]:
        wide = {
            c: g.pivot_table(index="image", columns="condition", values=c, aggfunc="mean")
            for c in ("correct", "logp_true")
        }
        images = wide["correct"].index
        idx = np.random.default_rng(seed).integers(0, len(images), size=(n_boot, len(images)))
        for condition in wide["correct"].columns:
            row = {**dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)), "condition": condition}
            row["heads"] = g.loc[g["condition"] == condition, "heads"].iloc[0]
            for c, table in wide.items():
                v = table[condition].to_numpy(dtype=float)
                d = v - table["none"].to_numpy(dtype=float)
                for label, x in ((c, v), (f"{c}_minus_none", d)):
                    row.update(_ci_columns(label, x.mean(), x[idx].mean(1)))
            row["n_images"] = len(images)
            out.append(row)
    return pd.DataFrame(out)
