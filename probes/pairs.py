"""Clean/corrupt pairs for activation patching: the same watch re-rendered with exactly one attribute changed.

A pair shares every token and position tag; only the image differs. Both images go through the model's own
frozen encoders, so a pair lives in the model's input space without touching the feature cache. The prompt is a
VQA question about the changed attribute, followed by the answer tokens the two answers share ("top-" for
top-left vs top-right): the patching metric compares the first token where the answers part. An "hour" pair moves
the hour hand to another face and asks the time; its answers share the hour's first digit and part at the second.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from models.encoders.images import to_tensor
from models.features import SemanticSpace, VQSpace
from models.generate import collate_prompts
from models.sequence import Batch, Encoder, Sequence
from tasks.render import render_array
from tasks.templates import IMAGE_TOKEN, QUESTIONS, answer
from tasks.world import ATTRIBUTE_VALUES, CORNERS, WEATHERS, Watch
from unilens.errors import UnilensError

HOURS = ATTRIBUTE_VALUES["hour"]
# The analyses patch these by default; "hour" is patchable on request (it asks the time question, see below).
DEFAULT_PAIR_ATTRIBUTES = ("weather", "weather_pos", "battery_pos")
PATCHABLE = (*DEFAULT_PAIR_ATTRIBUTES, "hour")
# the question a pair asks, where it is not the changed attribute's own
ASKED = {"hour": "time"}


@dataclass
class PairSet:
    attribute: str
    clean: Batch
    corrupt: Batch
    good: torch.Tensor  # (B,) the clean answer's first differing token
    bad: torch.Tensor  # (B,) the corrupt answer's first differing token
    watches: list[tuple[Watch, Watch]]
    prompts: list[Sequence]


def counterfactual(watch: Watch, attribute: str, rng: np.random.Generator) -> Watch:
    """The same watch with `attribute` changed to another valid value (corners stay distinct)."""
    if attribute == "weather":
        choices = [w for w in WEATHERS if w != watch.weather]
    elif attribute in ("weather_pos", "battery_pos"):  # a free corner: the two never share one
        choices = [c for c in CORNERS if c not in (watch.weather_pos, watch.battery_pos)]
    elif attribute == "hour":
        # another face (hour 0 and 12 draw the same one) with the same tens digit, so the answers "HH:MM:SS" part
        # at the hour's second digit in every pair: one logit difference, one answer position
        tens = watch.hour // 10
        choices = [h for h in HOURS if h // 10 == tens and h % 12 != watch.hour % 12]
    else:
        raise UnilensError(f"cannot build patching pairs for '{attribute}'; choose one of {list(PATCHABLE)}")
    return dataclasses.replace(watch, **{attribute: choices[int(rng.integers(len(choices)))]})


def pair_change(clean: Watch, corrupt: Watch, attribute: str) -> str:
    """What a pair changes, as the answer sees it: a corner's `row` (the answers part at their first token, "top"
    vs "bottom"; a diagonal move included) or only its `column` (they share "top-" and part at "left"/"right"), or
    the `value` of any other attribute. Rows and columns are read out in different blocks, so effects are
    summarised per change too."""
    before, after = getattr(clean, attribute), getattr(corrupt, attribute)
    if attribute not in ("weather_pos", "battery_pos"):
        return "value"
    return "row" if before.split("-")[0] != after.split("-")[0] else "column"


@torch.no_grad()
def encode_images(encoder, pixels: np.ndarray) -> np.ndarray:
    """uint8 images -> what a space stores: semantic features (N, T, D) or VQ codes (N, T)."""
    x = to_tensor(pixels)
    if encoder.kind == "vq":
        return encoder.codes(x).cpu().numpy().astype(np.int64)
    return encoder.features(x).float().cpu().numpy()


def in_memory_space(encoder, pixels: np.ndarray, ids: list[str]):
    """A space over freshly rendered images, shaped like the cached ones."""
    array = encode_images(encoder, pixels)
    index = {image_id: i for i, image_id in enumerate(ids)}
    if encoder.kind == "vq":
        return VQSpace(array, index, encoder.codebook.float().cpu())
    return SemanticSpace(array, index)


def _shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def build_pairs(
    built, watches: list[Watch], attribute: str, image_size: int, seed: int = 0, question: int = 0
) -> PairSet:
    """One pair per watch: clean = the watch, corrupt = `counterfactual(watch)`, asked the same question."""
    rng = np.random.default_rng(seed)
    model = built.model
    und_kind, gen_kind = model.cfg.spaces
    pairs = [(w, counterfactual(w, attribute, rng)) for w in watches]
    pixels = np.stack([render_array(w, image_size) for pair in pairs for w in pair])
    ids = [f"{kind}-{i}" for i in range(len(pairs)) for kind in ("clean", "corrupt")]
    und_space = in_memory_space(built.encoders[und_kind], pixels, ids)
    gen_space = und_space if gen_kind == und_kind else in_memory_space(built.encoders[gen_kind], pixels, ids)
    encoder = Encoder(built.tokenizer, und_space.num_tokens)
    asked = ASKED.get(attribute, attribute)
    q = QUESTIONS[asked][question % len(QUESTIONS[asked])]
    clean_seqs, corrupt_seqs, good, bad = [], [], [], []
    for i, (w_clean, w_corrupt) in enumerate(pairs):
        a, b = encoder.text(answer(w_clean, asked)), encoder.text(answer(w_corrupt, asked))
        k = _shared_prefix(a, b)
        if k == min(len(a), len(b)):
            raise UnilensError(
                f"answers '{answer(w_clean, asked)}' and '{answer(w_corrupt, asked)}' tokenize "
                "to a prefix of one another: no token separates them"
            )
        for seqs, which in ((clean_seqs, "clean"), (corrupt_seqs, "corrupt")):
            record = {
                "task": "vqa",
                "image": f"{which}-{i}",
                "conversations": [
                    {"from": "human", "value": f"{IMAGE_TOKEN}\n{q}", "attribute": asked},
                    {"from": "gpt", "value": ""},
                ],
            }
            seq = encoder.record(record, with_answers=False)
            seq.add_text(a[:k], "answer")
            seqs.append(seq.prefix(len(seq), "understand"))
        good.append(a[k])
        bad.append(b[k])
    clean = collate_prompts(clean_seqs, und_space, gen_space, encoder.pad_id)
    corrupt = collate_prompts(corrupt_seqs, und_space, gen_space, encoder.pad_id)
    return PairSet(attribute, clean, corrupt, torch.tensor(good), torch.tensor(bad), pairs, clean_seqs)
