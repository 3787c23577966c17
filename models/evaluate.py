"""Score a trained unified model on the unbiased test set: `unilens eval CHECKPOINT_OR_RUN`.

Understanding: every VQA turn (earlier turns given their true answers), soft and exact, per attribute and value;
captions for attribute precision and recall. Generation: the attributes each prompt specified, read back from the
generated image by the attribute reader (VQ outputs, decoded to pixels) or by linear probes trained on ground-truth
features (semantic outputs), plus the cosine to the ground-truth features.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from models.build import Built, build_spaces
from models.checkpoint import is_checkpoint, last_checkpoint, run_checkpoints
from models.encoders.images import to_uint8
from models.generate import (
    collate_prompts,
    generate_image_tokens,
    generation_prompt,
    greedy_answers,
    question_prompts,
    unconditional_prompts,
)
from models.presets import manifest_preset
from models.reader import AttributeReader, labels_of
from models.sequence import Encoder, Sequence, collate
from tasks.records import WorldDataset
from tasks.render import render_array
from tasks.scoring import score_caption, score_vqa, summarize
from tasks.splits import arm_label
from tasks.templates import clause, unconditional
from tasks.world import ATTRIBUTE_VALUES, CORNERS, WEATHERS, Watch
from unilens.errors import UnilensError

CHOICE_ATTRIBUTES = ("weather", "weather_pos", "battery_pos")
GEN_CHOICE_ATTRIBUTES = ("weather", "weather_pos", "battery_pos", "hour")
PROMPT_TO_READER = {
    "weather": ["weather"],
    "weather_pos": ["weather_pos"],
    "battery_pos": ["battery_pos"],
    "battery": ["battery_decile"],
    "time": ["hour", "minute5"],
}


@dataclass
class EvalConfig:
    batch_size: int = 32
    max_answer_tokens: int = 12
    max_caption_tokens: int = 96
    limit: int = 0  # evaluate only the first N test images (0: all)
    split: str = "test"  # "train" scores training images: their gap to the test images measures memorisation
    understanding: bool = True  # VQA (greedy, multiple choice, image reliance) and captions
    captions: bool = True
    generation: bool = True
    n_boot: int = 1000
    grid_images: int = 8
    fid_weights: str = ""  # a local TorchScript Inception: adds FID of VQ generations against the test images
    guidance: float = 1.0  # classifier-free guidance scale for generation (1: none; needs gen_prompt_dropout)
    # another dataset folder whose records are scored instead of the training dataset's: the same images asked other
    # questions (a run trained on time questions alone, scored on the dense test questions); "" scores the run's own
    dataset: str = ""

    def __post_init__(self) -> None:
        if self.split not in ("test", "train"):
            raise UnilensError(f"unknown evaluation split '{self.split}': choose test or train")
        if not self.understanding and not self.generation:
            raise UnilensError("nothing to evaluate: understanding and generation are both switched off; keep one")


# What each generation row reads, from: the free generation, the true image's own tokens, the teacher-forced tokens,
# and those under a request that names nothing (Evaluator.generation).
GENERATION_READINGS = ("correct", "ceiling", "teacher_forced", "teacher_forced_blind")


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _decoded(vq, codes: torch.Tensor, batch: int = 64) -> np.ndarray:
    """VQ codes (N, tokens) -> uint8 images (N, H, W, 3), decoded in batches."""
    return np.concatenate([to_uint8(vq.decode(c)) for c in torch.split(codes, batch)])


def _scored_records(dataset: WorldDataset, task: str, limit: int, split: str = "test") -> list[dict]:
    """The split's records of one task, the first of each image: every table keys a question by image, attribute and
    turn, and a training split can hold more records of an image (`extra_vqa_per_image`'s one-question records, after
    the image's own), which would be scored as turns of one conversation."""
    seen, rows = set(), []
    for r in dataset.test if split == "test" else dataset.train:
        if r["task"] == task and r["image"] not in seen:
            seen.add(r["image"])
            rows.append(r)
    return rows[:limit] if limit else rows


GRID_HEADER = 16  # pixels of column titles above a grid's first row


def answered(prompt: Sequence, value_ids: list[int], eos: int) -> tuple[Sequence, int]:
    """The prompt followed by a candidate answer and the end of turn, teacher-forced (supervised): the sequence and
    the answer's first position, the span (start, len(sequence)) that `span_scores` scores."""
    seq = prompt.prefix(len(prompt), "understand")
    start = len(seq)
    seq.add_text([*value_ids, eos], "answer", supervised=True)
    return seq, start


def span_scores(model, hidden: torch.Tensor, labels: torch.Tensor, spans: list[tuple[int, int, int]]):
    """Teacher-forced (log-probability, all tokens argmax-correct) of each (row, start, end) token span of a batch
    whose hidden states are given (start: the span's first token; labels shifted, the label at p is token p + 1).
    Only the spans' positions go through the output layer: with a real LLM's vocabulary (150k for Qwen2) the
    log-probabilities of every position of a batch of prompts with their image tokens would take gigabytes."""
    if not spans:
        return []
    rows = torch.cat([torch.full((end - start,), row) for row, start, end in spans]).to(hidden.device)
    positions = torch.cat([torch.arange(start - 1, end - 1) for _row, start, end in spans]).to(hidden.device)
    logp = model.text_logits(hidden[rows, positions]).float().log_softmax(-1)
    lab = labels[rows, positions]
    token_logp = logp.gather(1, lab[:, None]).squeeze(1)
    hit = logp.argmax(-1) == lab
    out, lo = [], 0
    for _row, start, end in spans:
        hi = lo + end - start
        out.append((float(token_logp[lo:hi].sum()), float(hit[lo:hi].all())))
        lo = hi
    return out


class Evaluator:
    def __init__(self, built: Built, dataset: WorldDataset, cache_dir: str | Path, cfg: EvalConfig):
        self.built = built
        self.model = built.model.eval()
        self.dataset = dataset
        self.cfg = cfg
        self.und_space, self.gen_space = build_spaces(built, self.model.cfg, dataset, cache_dir)
        self.encoder = Encoder(built.tokenizer, self.und_space.num_tokens)
        self.gen_encoder = Encoder(built.tokenizer, self.gen_space.num_tokens)
        self.device = next(self.model.parameters()).device

    def decode_text(self, ids: list[int]) -> str:
        return self.built.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _answer(self, seqs, max_tokens: int) -> list[str]:
        batch = collate_prompts(seqs, self.und_space, self.gen_space, self.encoder.pad_id).to(self.device)
        ids = greedy_answers(self.model, batch, self.built.tokenizer.eos_token_id, max_tokens)
        return [self.decode_text(x) for x in ids]

    def vqa(self) -> pd.DataFrame:
        prompts = []
        for rec in _scored_records(self.dataset, "vqa", self.cfg.limit, self.cfg.split):
            for seq, attribute, turn in question_prompts(self.encoder, rec):
                prompts.append((seq, attribute, turn, rec))
        rows = []
        for chunk in _batches(prompts, self.cfg.batch_size):
            answers = self._answer([p[0] for p in chunk], self.cfg.max_answer_tokens)
            for (_seq, attribute, turn, rec), answer in zip(chunk, answers, strict=True):
                rows.append(
                    {
                        "image": rec["image"],
                        "attribute": attribute,
                        "turn": turn,
                        "prediction": answer,
                        "watch": rec["watch"],
                    }
                )
        return score_vqa(rows)

    @torch.no_grad()
    def _span_scores(self, batch, spans: list[tuple[int, int, int]]) -> list[tuple[float, float]]:
        batch = batch.to(self.device)
        return span_scores(self.model, self.model.hidden(batch), batch.labels, spans)

    @torch.no_grad()
    def image_reliance(self) -> pd.DataFrame:
        """Does the model look at the image? Teacher-forced answers scored with each record's own image and with
        another record's image (a fixed derangement). Equal scores mean the answers come from priors alone."""
        records = _scored_records(self.dataset, "vqa", self.cfg.limit, self.cfg.split)
        seqs = [self.encoder.record(r) for r in records]
        n = len(seqs)
        if n < 2:
            return pd.DataFrame()
        swap = [(i + 1) % n for i in range(n)]  # a derangement; the next record is another image
        rows = []
        for condition, source in (("true", list(range(n))), ("swapped", swap)):
            for lo in range(0, n, self.cfg.batch_size):
                idx = list(range(lo, min(n, lo + self.cfg.batch_size)))
                chunk = [seqs[i] for i in idx]
                batch = collate(chunk, self.und_space, self.gen_space, self.encoder.pad_id)
                batch.und_inputs = torch.cat([self.und_space.inputs(seqs[source[i]].image) for i in idx])
                spans = [(j, start, end) for j, s in enumerate(chunk) for start, end, _ in s.answers]
                scores = iter(self._span_scores(batch, spans))
                for s in chunk:
                    for turn, (_start, _end, attribute) in enumerate(s.answers):
                        logp, exact = next(scores)
                        rows.append(
                            {
                                "image": s.image,
                                "attribute": attribute,
                                "turn": turn,
                                "condition": condition,
                                "answer_nll": -logp,
                                "exact_tf": exact,
                            }
                        )
        return pd.DataFrame(rows)

    @torch.no_grad()
    def prompt_reliance(self) -> pd.DataFrame:
        """Does generation follow its prompt? The teacher-forced image loss of every generated token (cross-entropy
        for VQ codes, 1 - cosine for features), with each image under its own prompt and under another record's
        prompt (a fixed derangement). Equal losses mean the model learned the images' distribution, not the
        prompt's: it then draws one image whatever it is asked. One row per image x token slot x condition."""
        records = _scored_records(self.dataset, "generation", self.cfg.limit, self.cfg.split)
        seqs = [self.gen_encoder.record(r) for r in records]
        n = len(seqs)
        if n < 2:
            return pd.DataFrame()
        swap = [(i + 1) % n for i in range(n)]
        tokens = self.gen_space.num_tokens
        rows = []
        for condition, source in (("true", list(range(n))), ("swapped", swap)):
            for lo in range(0, n, self.cfg.batch_size):
                idx = list(range(lo, min(n, lo + self.cfg.batch_size)))
                batch = collate([seqs[i] for i in idx], self.und_space, self.gen_space, self.encoder.pad_id)
                image_of = [seqs[source[i]].image for i in idx]  # the images stay; the prompts move
                batch.gen_inputs = torch.cat([self.gen_space.inputs(image) for image in image_of])
                batch.gen_targets = torch.cat([self.gen_space.targets(image) for image in image_of])
                loss = self._token_losses(batch)
                for j, image in enumerate(image_of):
                    for slot in range(tokens):
                        rows.append({"image": image, "slot": slot, "condition": condition, "image_loss": loss[j, slot]})
        return pd.DataFrame(rows)

    @torch.no_grad()
    def _token_losses(self, batch) -> np.ndarray:
        """The teacher-forced loss of every generated token of a generation batch, as in training: (rows, tokens)
        of the code cross-entropy (VQ) or 1 - cosine to the standardised target (features)."""
        batch = batch.to(self.device)
        head = self.model.gen_head(self.model.hidden(batch)[batch.gen_predict_mask]).float()
        if self.gen_space.kind == "vq":
            loss = torch.nn.functional.cross_entropy(head, batch.gen_targets, reduction="none")
        else:
            target = self.model.gen_target(batch.gen_targets.float())
            loss = 1 - torch.nn.functional.cosine_similarity(head, target, dim=-1)
        return loss.view(-1, self.gen_space.num_tokens).cpu().numpy()

    def image_losses(self, records: list[dict]) -> np.ndarray:
        """Each generation record's own image scored under its own prompt, per token (records, tokens)."""
        seqs = [self.gen_encoder.record(r) for r in records]
        out = [
            self._token_losses(collate(chunk, self.und_space, self.gen_space, self.encoder.pad_id))
            for chunk in _batches(seqs, self.cfg.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.gen_space.num_tokens))

    def prompt_choices(
        self, attributes: tuple[str, ...] = GEN_CHOICE_ATTRIBUTES, token_losses: bool = False
    ) -> pd.DataFrame:
        """Generation's multiple choice: every test generation prompt that names an attribute is asked again with
        each other value of it in place of the true one (one clause changed, the rest of the prompt kept), and the
        true image is scored under each (`image_loss`, the teacher-forced loss per token). The model knows what
        the word asks it to draw when the true value gives the lowest loss. Why beside the read-back: it needs no
        sampling and no reader, so a generation that misses a value the model does rank first points at decoding
        (or the image loss's share of that detail), and one it does not rank first points at the model. `hour`
        changes the hour of the prompted time; 0 and 12 draw the same face, so its candidates are 1 to 12.
        With `token_losses`, columns `token_0`... hold each row's loss per token slot: where in the image a word's
        worth sits."""
        rows, records = [], []
        for rec in _scored_records(self.dataset, "generation", self.cfg.limit, self.cfg.split):
            watch = Watch.from_dict(rec["watch"])
            human = rec["conversations"][0]
            for attribute in attributes:
                named = "time" if attribute == "hour" else attribute
                if named not in human.get("attributes", ()):
                    continue
                if attribute == "hour":
                    truth = watch.hour % 12 or 12
                    candidates = list(range(1, 13))
                else:
                    truth, candidates = getattr(watch, attribute), list(ATTRIBUTE_VALUES[attribute])
                said = clause(watch, named)
                if said not in human["value"]:
                    raise UnilensError(f"{rec['id']}: its prompt does not contain '{said}'; re-render the dataset")
                for candidate in candidates:
                    if candidate == truth:
                        asked = rec  # the prompt as written (hour 0 stays '00:')
                    else:
                        other = clause(dataclasses.replace(watch, **{attribute: candidate}), named)
                        turn = {**human, "value": human["value"].replace(said, other)}
                        asked = {**rec, "conversations": [turn, *rec["conversations"][1:]]}
                    records.append(asked)
                    row = {"image": rec["image"], "attribute": attribute, "value": str(truth)}
                    rows.append({**row, "candidate": str(candidate)})
        table = pd.DataFrame(rows)
        if not len(table):
            return table
        per_token = self.image_losses(records)
        table["image_loss"] = per_token.mean(-1)
        # the shape choice_predictions reads: one question per (image, attribute), the higher logp the likelier
        table = table.assign(turn=0, logp=-table["image_loss"])
        if token_losses:
            slots = pd.DataFrame(per_token, columns=[f"token_{k}" for k in range(per_token.shape[1])])
            table = pd.concat([table, slots], axis=1)
        return table

    @torch.no_grad()
    def choices(self, attributes: tuple[str, ...] = CHOICE_ATTRIBUTES) -> pd.DataFrame:
        """Multiple-choice scoring: the log-probability of every possible answer to each categorical question.
        Unlike greedy decoding it shows whether the model ranks an unseen value above another one even when a
        learned prior puts a third value first (the knowledge-transfer question)."""
        rows, seqs = [], []
        for rec in _scored_records(self.dataset, "vqa", self.cfg.limit, self.cfg.split):
            watch = Watch.from_dict(rec["watch"])
            for prompt, attribute, turn in question_prompts(self.encoder, rec):
                if attribute not in attributes:
                    continue
                truth = str(getattr(watch, attribute))
                for candidate in ATTRIBUTE_VALUES[attribute]:
                    ids = self.encoder.text(str(candidate))
                    seqs.append(answered(prompt, ids, self.built.tokenizer.eos_token_id))
                    rows.append(
                        {
                            "image": rec["image"],
                            "attribute": attribute,
                            "turn": turn,
                            "value": truth,
                            "candidate": str(candidate),
                        }
                    )
        logps = []
        for chunk in _batches(seqs, self.cfg.batch_size):
            batch = collate([c[0] for c in chunk], self.und_space, self.gen_space, self.encoder.pad_id)
            spans = [(j, start, len(seq)) for j, (seq, start) in enumerate(chunk)]
            logps += [logp for logp, _ in self._span_scores(batch, spans)]
        table = pd.DataFrame(rows)
        if not len(table):
            return table
        table["logp"] = logps
        return table

    def captions(self) -> pd.DataFrame:
        records = _scored_records(self.dataset, "caption", self.cfg.limit, self.cfg.split)
        rows = []
        for chunk in _batches(records, self.cfg.batch_size):
            seqs = [question_prompts(self.encoder, r)[0][0] for r in chunk]
            for rec, text in zip(chunk, self._answer(seqs, self.cfg.max_caption_tokens), strict=True):
                rows.append(
                    {"image": rec["image"], "prediction": text, **score_caption(text, Watch.from_dict(rec["watch"]))}
                )
        return pd.DataFrame(rows)

    def generate(self, records: list[dict]) -> torch.Tensor:
        guidance = self.cfg.guidance
        if guidance != 1.0 and self.model.cfg.gen_prompt_dropout <= 0:
            raise UnilensError(
                f"--guidance {guidance} needs a model trained with gen_prompt_dropout > 0 (under model: in its "
                "training config): this one never saw a request without attributes, so it has no unconditional "
                "image distribution to guide against. Retrain with e.g. gen_prompt_dropout: 0.1, or use guidance 1"
            )
        outs = []
        for chunk in _batches(records, self.cfg.batch_size):
            seqs = [generation_prompt(self.gen_encoder, r) for r in chunk]
            batch = collate_prompts(seqs, self.und_space, self.gen_space, self.encoder.pad_id).to(self.device)
            free = None
            if guidance != 1.0:
                plain = unconditional_prompts(self.gen_encoder, chunk)
                free = collate_prompts(plain, self.und_space, self.gen_space, self.encoder.pad_id).to(self.device)
            tokens = generate_image_tokens(
                self.model, batch, self.gen_space.num_tokens, self.gen_space, guidance=guidance, unconditional=free
            )
            outs.append(tokens.cpu())
        return torch.cat(outs)

    @torch.no_grad()
    def teacher_forced_tokens(self, records: list[dict]) -> torch.Tensor:
        """Every image token of each record predicted from its prompt and the true image's earlier tokens, in one
        forward pass as in training, in the form `generate` returns: codes (N, T), the head's argmax, or features
        (N, T, D) in the encoder's own space. Plain decoding (no guidance)."""
        outs = []
        for chunk in _batches(records, self.cfg.batch_size):
            seqs = [self.gen_encoder.record(r) for r in chunk]
            batch = collate(seqs, self.und_space, self.gen_space, self.encoder.pad_id).to(self.device)
            head = self.model.gen_head(self.model.hidden(batch)[batch.gen_predict_mask]).float()
            if self.gen_space.kind == "vq":
                out = head.argmax(-1)
            else:
                out = self.model.gen_output_to_space(self.model.at_target_scale(head))
            outs.append(out.view(len(chunk), self.gen_space.num_tokens, *out.shape[1:]).cpu())
        return torch.cat(outs) if outs else torch.zeros(0)

    def generation(self, reader: AttributeReader | None, feature_probes=None) -> tuple[pd.DataFrame, dict]:
        """Per prompted attribute: did the generated image show it? Also returns the generated tokens.

        `ceiling` scores the same attribute read from the generation space's own rendering of the true image (the
        VQ tokenizer's reconstruction, or the ground-truth features): the most a generator could score in this
        space, so a miss can be put on the model or on the tokenizer.

        `teacher_forced` reads it from `teacher_forced_tokens`, each token predicted after the true image's earlier
        ones, and `teacher_forced_blind` the same under a request that names nothing: what those earlier tokens give
        away by themselves. Read together, where the blind floor is low: a miss in `correct` that `teacher_forced`
        reads is lost in decoding, as the model's own earlier tokens drift from any training image (exposure bias);
        one it misses too is not drawn even from a right beginning. Where the floor is near the ceiling the reading
        says nothing: semantic tokens carry the whole layout (on the embedded default the first row of true
        features alone reads the weather icon's corner at 0.885, docs/results/2026-12-06)."""
        records = _scored_records(self.dataset, "generation", self.cfg.limit, self.cfg.split)
        tokens = self.generate(records)
        forced = self.teacher_forced_tokens(records)
        blind = self.teacher_forced_tokens([unconditional(r) for r in records])
        truth = torch.stack([self.gen_space.targets(r["image"]) for r in records])
        reconstructed, readings = None, {}
        if self.gen_space.kind == "vq":
            vq = self.built.encoders["vq"]
            pixels, reconstructed = _decoded(vq, tokens), _decoded(vq, truth)
            if reader is not None:
                images = (pixels, reconstructed, _decoded(vq, forced), _decoded(vq, blind))
                readings = dict(zip(GENERATION_READINGS, map(reader.read, images), strict=True))
            cos = None
        else:
            pixels = None
            if feature_probes is not None:
                read = (feature_probes.predict(x.numpy()) for x in (tokens, truth, forced, blind))
                readings = dict(zip(GENERATION_READINGS, read, strict=True))
            # in the standardised space: raw features share a large mean that would make any output look close
            norm, dev = self.model.norm_out.standardised, self.model.norm_out.mean.device
            cos = torch.nn.functional.cosine_similarity(norm(tokens.to(dev)), norm(truth.to(dev)), dim=-1)
            cos = cos.mean(-1).cpu().numpy()
        rows = []
        for i, rec in enumerate(records):
            watch = Watch.from_dict(rec["watch"])
            labels = labels_of(watch)
            for prompted in rec["conversations"][0]["attributes"]:
                for head in PROMPT_TO_READER[prompted]:
                    row = {
                        "image": rec["image"],
                        "attribute": head,
                        "value": str(labels[head]),
                        **{
                            name: float(readings[name][head][i] == labels[head]) if readings else np.nan
                            for name in GENERATION_READINGS
                        },
                    }
                    if cos is not None:
                        row["cosine"] = float(cos[i])
                    rows.append(row)
        generated = {"records": records, "tokens": tokens, "pixels": pixels, "reconstructed": reconstructed}
        generated["teacher_forced"], generated["teacher_forced_blind"] = forced, blind
        generated["read"] = readings.get("correct") if pixels is None else None  # semantic: the feature probes' reading
        return pd.DataFrame(rows), generated

    def grid(self, generated: dict, path: str | Path, n: int) -> None:
        """Prompt, ground truth, (VQ) the tokenizer's reconstruction of the truth, and the generation side by side
        for a person to look at: what the tokenizer cannot draw, no generator in its space can."""
        records = generated["records"][:n]
        size = self.dataset.image_size
        cell = max(size, 160)
        reconstructed = generated.get("reconstructed")
        # features have no pixels: show each generation by the training image whose features are nearest (over all
        # tokens, so mostly the face colour), and, where the feature probes read it, by a watch drawn from what they
        # read (weather, corners, battery decile, hour, five minutes; grey face), which shows the attributes scored
        nearest = self.nearest_training_images(generated["tokens"][:n]) if generated["pixels"] is None else None
        read = generated.get("read")
        titles = ["prompt", "ground truth"]
        titles += [] if reconstructed is None else ["tokenizer (truth re-coded)"]
        titles += ["generated" if nearest is None else "generated: nearest train"]
        titles += [] if read is None else ["generated: probes' reading"]
        # titles sit in a band above the images: a label drawn on an image hides its top-left corner, where the
        # weather icon or the battery may be exactly what the reader is asked to judge
        sheet = Image.new("RGB", (len(titles) * cell, GRID_HEADER + len(records) * (size + 4)), "white")
        draw = ImageDraw.Draw(sheet)
        for c, title in enumerate(titles):
            draw.text((c * cell + 2, 2), title, fill="black")
        for i, rec in enumerate(records):
            y = GRID_HEADER + i * (size + 4)
            prompt = rec["conversations"][0]["value"]
            words, lines, line = prompt.split(), [], ""
            for w in words:
                if len(line) + len(w) > 26:
                    lines.append(line)
                    line = ""
                line += w + " "
            lines.append(line)
            draw.multiline_text((2, y + 2), "\n".join(lines[:9]), fill="black", spacing=1)
            shown = [self.dataset.images[rec["image"]]]
            shown += [] if reconstructed is None else [reconstructed[i]]
            shown += [generated["pixels"][i] if nearest is None else self.dataset.images[nearest[i]]]
            shown += [] if read is None else [render_array(watch_from_reading(read, i), size)]
            for c, image in enumerate(shown, start=1):
                sheet.paste(Image.fromarray(image), (c * cell, y))
        sheet.save(path)

    @torch.no_grad()
    def nearest_training_images(self, features: torch.Tensor) -> list[str]:
        """For generated semantic features (B, T, D): the training image with the most similar features (cosine
        of standardised, token-pooled features)."""
        ids = sorted({r["image"] for r in self.dataset.train if r.get("image")})
        norm = self.model.norm_out.standardised
        dev = self.model.norm_out.mean.device

        def pooled(x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(norm(x.to(dev).float()).flatten(1), dim=-1)

        bank = torch.cat(
            [
                pooled(torch.stack([self.gen_space.targets(i) for i in ids[k : k + 256]]))
                for k in range(0, len(ids), 256)
            ]
        )
        best = (pooled(features) @ bank.T).argmax(-1).cpu().tolist()
        return [ids[j] for j in best]


def asked_before(table: pd.DataFrame) -> pd.Series:
    """Per row (image x attribute x turn): whether an earlier turn of the image's record asked the same attribute
    (the evaluator scores one VQA conversation per image)."""
    return table["turn"] > table.groupby(["image", "attribute"])["turn"].transform("min")


def by_turn(table: pd.DataFrame, task: str) -> list[tuple[str, pd.DataFrame]]:
    """(task name, rows) for every turn, the first turn (what the paper scores) and the later turns; where some
    turn repeats an earlier turn's question, also the repeated questions and the rest. Why the first split: a later
    question stands further from the image, and a read-out that rides on the relative distance (RoPE) can be right
    after the image and wrong one turn later (docs/results/2026-11-22, recipe_search). Why the second: a training
    layout that asks every attribute once (`vqa_turns: all`) never repeats a question, and a model can learn that a
    later corner differs from the corners already answered, true of two items but not of one item asked twice
    (docs/results/2026-12-07, stop 53)."""
    parts = [(task, table), (f"{task}_first_turn", table[table["turn"] == 0])]
    parts.append((f"{task}_later_turns", table[table["turn"] > 0]))
    repeated = asked_before(table) if len(table) else pd.Series(dtype=bool)
    if repeated.any():
        parts += [(f"{task}_repeated_questions", table[repeated]), (f"{task}_new_questions", table[~repeated])]
    return [(name, rows) for name, rows in parts if len(rows)]


def summary_table(
    vqa: pd.DataFrame,
    captions: pd.DataFrame,
    gen: pd.DataFrame,
    n_boot: int,
    reliance: pd.DataFrame | None = None,
    choices: pd.DataFrame | None = None,
    prompt: pd.DataFrame | None = None,
    gen_choices: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Tidy rows: task x attribute x value x metric with mean and bootstrap CI (images resampled)."""
    parts = []
    if gen_choices is not None and len(gen_choices):
        picked = choice_predictions(gen_choices).merge(choice_margins(gen_choices), on=["image", "attribute", "turn"])
        for by in (["attribute"], ["attribute", "value"]):
            t = summarize(picked, by, ("choice", "margin"), n_boot=n_boot)
            parts.append(
                _tidy(t.melt(id_vars=[*by, "n"], var_name="metric_col", value_name="v"), "generation_choice", by)
            )
    if prompt is not None and len(prompt):
        per_image = prompt_gain(prompt).assign(attribute="image")
        t = summarize(per_image, ["attribute"], ("true", "swapped", "gain"), n_boot=n_boot)
        parts.append(
            _tidy(
                t.melt(id_vars=["attribute", "n"], var_name="metric_col", value_name="v"),
                "prompt_reliance",
                ["attribute"],
            )
        )
    if choices is not None and len(choices):
        picked = choice_predictions(choices)
        for task, subset in by_turn(picked, "vqa_choice"):
            for by in (["attribute"], ["attribute", "value"]):
                t = summarize(subset, by, ("choice",), n_boot=n_boot)
                parts.append(_tidy(t.melt(id_vars=[*by, "n"], var_name="metric_col", value_name="v"), task, by))
    if reliance is not None and len(reliance):
        t = summarize(image_gap(reliance), ["attribute"], ("gap",), n_boot=n_boot)
        parts.append(
            _tidy(t.melt(id_vars=["attribute", "n"], var_name="metric_col", value_name="v"), "image_gap", ["attribute"])
        )
        for condition, part in reliance.groupby("condition"):
            t = summarize(part, ["attribute"], ("answer_nll", "exact_tf"), n_boot=n_boot)
            t = t.melt(id_vars=["attribute", "n"], var_name="metric_col", value_name="v")
            parts.append(_tidy(t, f"teacher_forced_{condition}_image", ["attribute"]))
    if len(vqa):
        for task, subset in by_turn(vqa, "vqa"):
            for by in (["attribute"], ["attribute", "value"]):
                t = summarize(subset, by, ("soft", "exact", "hour"), n_boot=n_boot)
                t = t.melt(id_vars=[*by, "n"], var_name="metric_col", value_name="v")
                parts.append(_tidy(t, task, by))
    if len(captions):
        c = captions.assign(attribute="caption")
        parts.append(
            _tidy(
                summarize(c, ["attribute"], ("precision", "recall"), n_boot=n_boot).melt(
                    id_vars=["attribute", "n"], var_name="metric_col", value_name="v"
                ),
                "caption",
                ["attribute"],
            )
        )
    if len(gen) and gen["correct"].notna().any():
        scored = tuple(m for m in GENERATION_READINGS if m in gen and gen[m].notna().any())
        for by in (["attribute"], ["attribute", "value"]):
            t = summarize(gen, by, scored, n_boot=n_boot).melt(
                id_vars=[*by, "n"], var_name="metric_col", value_name="v"
            )
            parts.append(_tidy(t, "generation", by))
    if len(gen) and "cosine" in gen:
        g = gen.drop_duplicates("image").assign(attribute="all")
        parts.append(
            _tidy(
                summarize(g, ["attribute"], ("cosine",), n_boot=n_boot).melt(
                    id_vars=["attribute", "n"], var_name="metric_col", value_name="v"
                ),
                "generation",
                ["attribute"],
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def image_gap(reliance: pd.DataFrame) -> pd.DataFrame:
    """Per question: the answer's loss with another record's image minus with its own (`gap`, nats). Paired per
    question, so the priors cancel: 0 means the answer does not use the image, whatever the accuracy. Why not the
    two conditions' means apart: their CIs overlap long after the paired difference is clearly above 0."""
    keys = ["image", "attribute", "turn"]
    wide = reliance.pivot_table(index=keys, columns="condition", values="answer_nll").reset_index()
    return wide.assign(gap=wide["swapped"] - wide["true"])[[*keys, "true", "swapped", "gap"]]


def prompt_gain(prompt: pd.DataFrame) -> pd.DataFrame:
    """Per image: its mean image loss under its own prompt (`true`), under another's (`swapped`), and the
    difference (`gain`, > 0 when the prompt informs the image)."""
    wide = prompt.pivot_table(index="image", columns="condition", values="image_loss", aggfunc="mean")
    return wide.assign(gain=wide["swapped"] - wide["true"]).reset_index()[["image", "true", "swapped", "gain"]]


def choice_predictions(choices: pd.DataFrame, among: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """One row per question: the highest-scoring candidate and whether it is right. `among` restricts the
    candidates per attribute (e.g. only the values held out of the understanding data)."""
    d = choices.reset_index(drop=True)  # idxmax returns labels: a pooled table's repeated labels would pick twice
    if among:
        keep = d.apply(lambda r: r["attribute"] not in among or r["candidate"] in among[r["attribute"]], axis=1)
        d = d[keep & d.apply(lambda r: r["attribute"] not in among or r["value"] in among[r["attribute"]], axis=1)]
    # a question is asked once per checkpoint (and per model, in pooled tables): pick among its own candidates only
    question = ["image", "attribute", "turn", *[c for c in ("model", "checkpoint") if c in d]]
    best = d.loc[d.groupby(question, sort=False)["logp"].idxmax()]
    return best.assign(choice=(best["candidate"] == best["value"]).astype(float)).reset_index(drop=True)


def choice_margins(choices: pd.DataFrame) -> pd.DataFrame:
    """Per question: the true candidate's log-probability minus the mean of the others' (`margin`, nats; for
    generation choices the mean per-token image loss of the wrong prompts minus the true one's). Paired per question,
    so > 0 means the named value moves the model towards the truth even where another value still ranks first."""
    keys = ["image", "attribute", "turn", *[c for c in ("model", "checkpoint") if c in choices]]
    is_true = choices["candidate"] == choices["value"]
    true = choices[is_true].set_index(keys)["logp"]
    others = choices[~is_true].groupby(keys)["logp"].mean()
    return (true - others).rename("margin").dropna().reset_index()


def _tidy(melted: pd.DataFrame, task: str, by: list[str]) -> pd.DataFrame:
    melted = melted.dropna(subset=["v"]).copy()  # metrics a group does not have (summarize leaves them out)
    melted["metric"] = melted["metric_col"].str.replace(r"_(lo|hi)$", "", regex=True)
    melted["stat"] = melted["metric_col"].str.extract(r"_(lo|hi)$")[0].fillna("mean")
    wide = melted.pivot_table(index=[*by, "n", "metric"], columns="stat", values="v").reset_index()
    if "value" not in wide:
        wide["value"] = "all"
    wide["task"] = task
    return wide[["task", "attribute", "value", "metric", "mean", "lo", "hi", "n"]]


def watch_from_reading(read: dict[str, np.ndarray], i: int) -> Watch:
    """The watch that the reader's or the feature probes' labels (models.reader.labels_of) of image i describe: the
    middle of each battery decile and five-minute bin, second 0, a grey face (no probe reads the face)."""
    return Watch(
        hour=int(read["hour"][i]),
        minute=int(read["minute5"][i]) * 5,
        second=0,
        weather=WEATHERS[int(read["weather"][i])],
        battery=int(read["battery_decile"][i]) * 10 + 5,
        weather_pos=CORNERS[int(read["weather_pos"][i])],
        battery_pos=CORNERS[int(read["battery_pos"][i])],
        face_color=(128, 128, 128),
    )


class FeatureProbes:
    """Linear read-out of each reader attribute from ground-truth semantic features (flattened tokens): one ridge
    classifier per attribute (+-1 targets per class, the largest score wins), all fitted in one solve."""

    def __init__(self, space, dataset: WorldDataset):
        from sklearn.linear_model import Ridge

        train = {r["image"]: r["watch"] for r in dataset.train}
        ids = list(train)
        # float64: with more features (64 tokens x d) than images the ridge solve is in the dual, whose matrix is
        # ill-conditioned for float32 (rcond 1.5e-8 on the embedded default, and scikit-learn warned at every eval);
        # its float32 predictions agreed with these on 98-100% of test images, even with noise added.
        x = np.stack([space.inputs(i).numpy().reshape(-1) for i in ids]).astype(np.float64)
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        labels = [labels_of(Watch.from_dict(train[i])) for i in ids]
        self.classes = {head: np.array(sorted({lab[head] for lab in labels})) for head in labels[0]}
        targets = [
            np.where(np.array([lab[head] for lab in labels])[:, None] == classes[None, :], 1.0, -1.0)
            for head, classes in self.classes.items()
        ]
        self.ridge = Ridge(alpha=10.0).fit((x - self.mean) / self.std, np.concatenate(targets, axis=1))

    def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
        x = (features.reshape(len(features), -1).astype(np.float64) - self.mean) / self.std
        scores, out, start = self.ridge.predict(x), {}, 0
        for head, classes in self.classes.items():
            out[head] = classes[scores[:, start : start + len(classes)].argmax(1)]
            start += len(classes)
        return out

    def accuracy(self, space, dataset: WorldDataset) -> dict[str, float]:
        test = {r["image"]: r["watch"] for r in dataset.test}
        x = np.stack([space.inputs(i).numpy() for i in test])
        pred = self.predict(x)
        labels = [labels_of(Watch.from_dict(w)) for w in test.values()]
        return {h: float(np.mean(pred[h] == np.array([lab[h] for lab in labels]))) for h in pred}


def last_checkpoints(models: dict[str, str]) -> dict[str, Path]:
    """Each named model's checkpoint (a run folder's last), all resolved before an analysis loads the first, so that a
    wrong path fails in seconds rather than after the models before it were analysed."""
    return {name: last_checkpoint(target) for name, target in models.items()}


def checkpoints_of(target: str | Path, which: str = "last") -> list[Path]:
    """A checkpoint folder itself, or a run folder's checkpoints: 'last', 'all', comma-separated steps, or
    'fractions:0.25,0.5,1' (the checkpoints saved at those fractions of training)."""

    target = Path(target)
    if is_checkpoint(target):
        return [target]
    ckpts = run_checkpoints(target)
    if which == "last":
        return ckpts[-1:]
    if which == "all":
        return ckpts
    if which.startswith("fractions:"):
        from models.checkpoint import read_manifest

        try:
            fractions = [float(f) for f in which.split(":", 1)[1].split(",")]
        except ValueError:
            raise UnilensError(f"cannot read '{which}': write fractions:0.25,0.5,1") from None
        saved = {c: read_manifest(c)["fraction"] for c in ckpts}
        chosen = [c for c, f in saved.items() if any(abs(f - w) < 1e-6 for w in fractions)]
        if len(chosen) != len(fractions):
            raise UnilensError(f"asked for fractions {fractions}, the run saved {sorted(set(saved.values()))}")
        return chosen
    by_step = {int(c.name.split("-")[1]): c for c in ckpts}
    try:
        wanted = {max(by_step) if s.strip() == "last" else int(s) for s in which.split(",")}
    except ValueError:
        raise UnilensError(
            f"cannot read checkpoints '{which}': give last, all, fractions:0.5,1 or steps such as 312,last"
        ) from None
    if not wanted <= by_step.keys():
        raise UnilensError(f"asked for steps {sorted(wanted)}, the run has {[c.name for c in ckpts]}")
    return [by_step[step] for step in sorted(wanted)]


def eval_folder(ckpts: list[Path], out: str | Path | None, split: str) -> Path:
    """Where `run_eval` writes: `out` when given, else `eval/` beside the run's checkpoints (or inside a lone
    checkpoint); another split gets `eval_{split}/`, so that it never overwrites the test scores."""
    if out:
        return Path(out)
    folder = "eval" if split == "test" else f"eval_{split}"
    return ckpts[0].parent.parent / folder if ckpts[0].parent.name == "checkpoints" else ckpts[0] / folder


IMAGE_FILES = ("images.npy", "images.jsonl")


def dataset_to_score(trained_on: WorldDataset, other: str | Path = "") -> WorldDataset:
    """The dataset whose records are scored: the one the checkpoint was trained on, or `other` when given, which must
    hold the very same images (their file hashes in both manifests agree), since the model's feature caches, the
    feature probes and the train/test split all follow the images."""
    from tasks.records import load_dataset

    if not other:
        return trained_on
    dataset = load_dataset(other)
    differs = [f for f in IMAGE_FILES if dataset.manifest["files"].get(f) != trained_on.manifest["files"].get(f)]
    if differs:
        raise UnilensError(
            f"{dataset.folder} holds other images than {trained_on.folder}, which the checkpoint was trained on "
            f"({', '.join(differs)} differ): give a dataset made with the same seed, image count and size as the "
            "training one (only its questions may differ), or leave the dataset out to score the training one's"
        )
    return dataset


def run_eval(
    target: str | Path, out: str | Path | None, cfg: EvalConfig, reader_dir: str | None, which: str = "last", log=print
) -> pd.DataFrame:
    """Evaluate checkpoints; write vqa.csv, captions.csv, generation.csv, summary.csv and grid PNGs to `out`.
    The summary's `attrs["folder"]` names the folder they went to (`out`, or the default beside the run)."""
    from models.build import load_checkpoint
    from models.fingerprint import dependency_label
    from models.reader import load_reader
    from tasks.records import load_dataset
    from unilens.io import atomic_write_text

    ckpts = checkpoints_of(target, which)
    out = eval_folder(ckpts, out, cfg.split)
    out.mkdir(parents=True, exist_ok=True)
    reader = load_reader(reader_dir) if reader_dir else None
    tables = {
        "vqa": [],
        "choices": [],
        "image_reliance": [],
        "prompt_reliance": [],
        "generation_choices": [],
        "captions": [],
        "generation": [],
        "summary": [],
    }
    for ckpt in ckpts:
        built, manifest = load_checkpoint(ckpt)
        dataset = dataset_to_score(load_dataset(manifest["dependencies"]["dataset"]["path"]), cfg.dataset)
        ev = Evaluator(built, dataset, manifest["config"]["cache_dir"], cfg)
        tags = {
            "checkpoint": ckpt.name,
            "step": manifest["step"],
            "fraction": round(manifest["fraction"], 3),
            "variant": manifest["variant"],
            "preset": manifest_preset(manifest),
            "mixture": arm_label(manifest["arm"]),
            "seed": manifest["config"]["seed"],
            "split": cfg.split,
            "guidance": cfg.guidance,
            "build": dependency_label(manifest["dependencies"]),
            "dataset": dataset.folder.name,
        }
        understand = cfg.understanding
        vqa = ev.vqa() if understand else pd.DataFrame()
        reliance = ev.image_reliance() if understand else pd.DataFrame()
        prompt = ev.prompt_reliance() if cfg.generation else pd.DataFrame()
        gen_choices = ev.prompt_choices() if cfg.generation else pd.DataFrame()
        choices = ev.choices() if understand else pd.DataFrame()
        caps = ev.captions() if understand and cfg.captions else pd.DataFrame()
        gen = pd.DataFrame()
        if cfg.generation:
            probes = FeatureProbes(ev.gen_space, dataset) if ev.gen_space.kind == "semantic" else None
            gen, generated = ev.generation(reader, probes)
            ev.grid(generated, out / f"grid_{ckpt.name}.png", cfg.grid_images)
        summary = summary_table(vqa, caps, gen, cfg.n_boot, reliance, choices, prompt, gen_choices)
        if cfg.fid_weights and cfg.generation and generated["pixels"] is not None:
            from models.fid import fid, load_feature_net

            truth = np.stack([dataset.images[r["image"]] for r in generated["records"]])
            value = fid(load_feature_net(cfg.fid_weights), generated["pixels"], truth)
            # one number per checkpoint: no bootstrap (each resample would need new statistics)
            fid_row = {"task": "generation", "attribute": "fid", "value": "all", "metric": "fid", "mean": value}
            summary = pd.concat([summary, pd.DataFrame([{**fid_row, "lo": np.nan, "hi": np.nan, "n": len(gen)}])])
        elif cfg.fid_weights and cfg.generation:
            log(f"[eval] {ckpt}: FID skipped: it applies to VQ (pixel) generations, this model generates features")
        named = (
            ("vqa", vqa),
            ("choices", choices),
            ("image_reliance", reliance),
            ("prompt_reliance", prompt),
            ("generation_choices", gen_choices),
            ("captions", caps),
            ("generation", gen),
            ("summary", summary),
        )
        for name, table in named:
            if len(table):
                tables[name].append(table.assign(**tags))
        log(
            f"[eval] {ckpt} ({tags['build']}): "
            + ", ".join(
                f"{r.task}/{r.attribute}/{r.metric}={r.mean:.3f}"
                for r in summary[summary["value"] == "all"].itertuples()
            )
        )
    result = {}
    for name, parts in tables.items():
        if parts:
            result[name] = pd.concat(parts, ignore_index=True)
            atomic_write_text(out / f"{name}.csv", result[name].to_csv(index=False))
    summary = result.get("summary", pd.DataFrame())
    summary.attrs["folder"] = out
    return summary
