"""Records -> model sequences: text token ids, image slots, next-token labels and position tags.

Layout (understanding):  <bos> USER: <boi> [image x T] <eoi> question \\nASSISTANT: answer </s> USER: ...
Layout (generation):     <bos> USER: prompt \\nASSISTANT: phrase <boi> [image x T] <eoi>
The hidden state before each generated image token predicts it (teacher forcing): <boi> predicts token 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from models.chat import ASSISTANT, USER
from tasks.templates import IMAGE_TOKEN
from unilens.errors import UnilensError

# slot kinds
TEXT, UND_IMAGE, GEN_IMAGE, BOI, EOI, PAD = range(6)
# position tags, for analyses that select positions by name
TAGS = ("pad", "bos", "template", "image", "question", "answer", "gen_prompt", "gen_answer", "gen_image", "boi", "eoi")
TAG = {name: i for i, name in enumerate(TAGS)}
CONTEXTS = ("understand", "generate")


@dataclass
class Sequence:
    """One record, unpadded."""

    ids: list[int] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # label at i = the text token expected at i + 1, or -100
    tags: list[int] = field(default_factory=list)
    image_tok: list[int] = field(default_factory=list)  # token index within its image, or -1
    image: str | None = None
    context: str = "understand"
    answers: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, attribute) of each answer
    gen_weights: list[float] | None = None  # a loss weight per generated image token (None: all 1)
    und_labels: list[int] | None = None  # the understanding image's attribute labels in models.reader.HEADS order
    label_weights: list[float] | None = None  # a text-loss weight per position (None: all 1)

    def add_text(self, token_ids: list[int], tag: str, supervised: bool = False) -> None:
        for t in token_ids:
            if supervised and self.ids:
                self.labels[-1] = t
            self.ids.append(t)
            self.kind.append(TEXT)
            self.labels.append(-100)
            self.tags.append(TAG[tag])
            self.image_tok.append(-1)

    def add_image(self, num_tokens: int, generated: bool, pad_id: int) -> None:
        self._add_marker(BOI, "boi", pad_id)
        for t in range(num_tokens):
            self.ids.append(pad_id)
            self.kind.append(GEN_IMAGE if generated else UND_IMAGE)
            self.labels.append(-100)
            self.tags.append(TAG["gen_image" if generated else "image"])
            self.image_tok.append(t)
        self._add_marker(EOI, "eoi", pad_id)

    def _add_marker(self, kind: int, tag: str, pad_id: int) -> None:
        self.ids.append(pad_id)
        self.kind.append(kind)
        self.labels.append(-100)
        self.tags.append(TAG[tag])
        self.image_tok.append(-1)

    def __len__(self) -> int:
        return len(self.ids)

    def prefix(self, n: int, context: str, with_image: bool = True) -> Sequence:
        """The first n positions as an unsupervised prompt (for decoding)."""
        return Sequence(
            ids=self.ids[:n],
            kind=self.kind[:n],
            labels=[-100] * n,
            tags=self.tags[:n],
            image_tok=self.image_tok[:n],
            image=self.image if with_image else None,
            context=context,
        )


class Encoder:
    """Tokenizes pieces separately and caches them: the same text always gets the same ids at any boundary.
    With images=False it drops image slots: text-only pre-training sees exactly the ids the unified model sees."""

    def __init__(self, tokenizer, num_image_tokens: int, images: bool = True):
        self.tok = tokenizer
        self.num_image_tokens = num_image_tokens
        self.images = images
        self.pad_id = tokenizer.pad_token_id
        self._cache: dict[str, list[int]] = {}

    def text(self, s: str) -> list[int]:
        if s not in self._cache:
            self._cache[s] = self.tok(s, add_special_tokens=False)["input_ids"]
        return self._cache[s]

    def start(self, seq: Sequence) -> None:
        if self.tok.bos_token_id is not None:
            seq.add_text([self.tok.bos_token_id], "bos")

    def record(self, record: dict, with_answers: bool = True, max_turns: int | None = None) -> Sequence:
        """A full training sequence; with_answers=False stops before the first answer (a decoding prompt)."""
        convs = record["conversations"]
        generate = record["task"] == "generation"
        seq = Sequence(image=record.get("image"), context="generate" if generate else "understand")
        self.start(seq)
        turns = list(zip(convs[::2], convs[1::2], strict=True))[:max_turns]
        for human, gpt in turns:
            self._human(seq, human["value"], generate)
            seq.add_text(self.text(ASSISTANT), "template")
            if not with_answers:
                return seq
            self._gpt(seq, gpt["value"], generate, human.get("attribute", record["task"]))
        return seq

    def _human(self, seq: Sequence, text: str, generate: bool) -> None:
        seq.add_text(self.text(USER), "template")
        parts = text.split(IMAGE_TOKEN)
        for i, part in enumerate(parts):
            if i > 0 and self.images:
                seq.add_image(self.num_image_tokens, generated=False, pad_id=self.pad_id)
            part = part.strip("\n") if i > 0 else part
            if part:
                seq.add_text(self.text(part), "gen_prompt" if generate else "question")

    def _gpt(self, seq: Sequence, text: str, generate: bool, attribute: str) -> None:
        if generate and IMAGE_TOKEN in text:
            phrase = text.replace(IMAGE_TOKEN, "").strip()
            seq.add_text(self.text(phrase), "gen_answer", supervised=True)
            if self.images:
                seq.add_image(self.num_image_tokens, generated=True, pad_id=self.pad_id)
            return
        start = len(seq)
        seq.add_text(self.text(text), "answer", supervised=True)
        seq.add_text([self.tok.eos_token_id], "answer", supervised=True)
        seq.answers.append((start, len(seq), attribute))


@dataclass
class Batch:
    """Padded sequences plus the image inputs and targets they need, in row-major order of their slots."""

    ids: torch.Tensor  # (B, L)
    kind: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L)
    tags: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L) bool
    und_inputs: torch.Tensor  # (n_und_slots, D_und)
    gen_inputs: torch.Tensor  # (n_gen_slots, D_gen)
    gen_targets: torch.Tensor  # (n_gen_slots,) codes or (n_gen_slots, D) features
    contexts: list[str]
    images: list[str | None]
    gen_weights: torch.Tensor | None = None  # (n_gen_slots,) image-loss weights; None: every token weighs 1
    und_labels: torch.Tensor | None = None  # (B, attributes) labels of each row's understanding image, -100: none
    label_weights: torch.Tensor | None = None  # (B, L) text-loss weights per label; None: every label weighs 1

    def to(self, device: torch.device) -> Batch:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.__dict__.items()}
        return Batch(**moved)

    def head(self, k: int) -> Batch:
        """The first k examples (image slots sliced to the images those rows hold)."""
        n_und = int((self.kind[:k] == UND_IMAGE).sum())
        n_gen = int((self.kind[:k] == GEN_IMAGE).sum())
        fields = {}
        for name, value in self.__dict__.items():
            if name == "und_inputs":
                fields[name] = value[:n_und]
            elif name in ("gen_inputs", "gen_targets", "gen_weights"):
                fields[name] = value[:n_gen] if value is not None else None
            else:
                fields[name] = value[:k] if value is not None else None
        return Batch(**fields)

    @property
    def gen_predict_mask(self) -> torch.Tensor:
        """Positions whose next position is a generated image token."""
        mask = torch.zeros_like(self.attention_mask)
        mask[:, :-1] = self.kind[:, 1:] == GEN_IMAGE
        return mask

    @property
    def image_loss_count(self) -> torch.Tensor:
        """What the image loss's sum is divided by: the predicted image tokens (one per generated image slot, so no
        mask is built), or their weights' sum if weighted."""
        if self.gen_weights is None:
            return torch.tensor(float(len(self.gen_targets)), device=self.gen_targets.device)
        return self.gen_weights.sum()

    @property
    def und_label_count(self) -> torch.Tensor:
        """Rows whose understanding image carries labels (what the auxiliary loss's sum is divided by)."""
        if self.und_labels is None:
            return torch.zeros((), device=self.ids.device)
        return (self.und_labels != -100).any(-1).sum().float()


TEXT_LOSS_UNITS = ("token", "answer")


def check_text_loss_unit(unit: str) -> None:
    if unit not in TEXT_LOSS_UNITS:
        raise UnilensError(f"unknown text_loss_unit '{unit}'; choose one of {list(TEXT_LOSS_UNITS)}")


def text_loss_weights(labels: torch.Tensor, unit: str = "token") -> torch.Tensor:
    """A weight per label position (0 where there is no label). "token": every supervised token counts once, the
    per-token mean. "answer": every answer counts once, whatever its length: each maximal run of consecutive labelled
    positions (an answer with its end token, a caption, a generation phrase) shares a weight of 1.

    Why offered: under the per-token mean an eight-digit time the model cannot read weighs eight times a one-word
    weather it can learn (docs/results/2026-12-02, weather_kind)."""
    check_text_loss_unit(unit)
    labelled = labels != -100
    if unit == "token":
        return labelled.float()
    starts = labelled.clone()
    starts[:, 1:] &= ~labelled[:, :-1]
    run = starts.flatten().long().cumsum(0).reshape(labels.shape) - 1  # run index of every labelled position
    run = run.masked_fill(~labelled, 0)
    lengths = torch.zeros(int(starts.sum()) + 1, dtype=torch.float32, device=labels.device)
    lengths.index_add_(0, run[labelled], torch.ones(int(labelled.sum()), device=labels.device))
    return torch.where(labelled, 1.0 / lengths[run].clamp(min=1), torch.zeros((), device=labels.device))


def collate(seqs: list[Sequence], und_space, gen_space, pad_id: int, left_pad: bool = False) -> Batch:
    """Pad to one length (on the right for training, on the left for decoding prompts)."""
    n = max(map(len, seqs))
    b = len(seqs)
    ids = torch.full((b, n), pad_id, dtype=torch.long)
    kind = torch.full((b, n), PAD, dtype=torch.long)
    labels = torch.full((b, n), -100, dtype=torch.long)
    tags = torch.zeros((b, n), dtype=torch.long)
    und_inputs, gen_inputs, gen_targets, gen_weights = [], [], [], []
    weighted = any(s.gen_weights is not None for s in seqs)
    for i, s in enumerate(seqs):
        span = slice(n - len(s), n) if left_pad else slice(0, len(s))
        ids[i, span] = torch.tensor(s.ids)
        kind[i, span] = torch.tensor(s.kind)
        labels[i, span] = torch.tensor(s.labels)
        tags[i, span] = torch.tensor(s.tags)
        if UND_IMAGE in s.kind:
            und_inputs.append(und_space.inputs(s.image))
        if GEN_IMAGE in s.kind:
            gen_inputs.append(gen_space.inputs(s.image))
            gen_targets.append(gen_space.targets(s.image))
            if weighted:
                n_gen = s.kind.count(GEN_IMAGE)
                w = s.gen_weights if s.gen_weights is not None else [1.0] * n_gen
                if len(w) != n_gen:
                    raise UnilensError(f"a sequence has {len(w)} image-loss weights for {n_gen} generated tokens")
                gen_weights.append(torch.tensor(w, dtype=torch.float32))

    labelled = [s.und_labels for s in seqs if s.und_labels is not None]
    und_labels = None
    if labelled:
        und_labels = torch.full((b, len(labelled[0])), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            if s.und_labels is not None and UND_IMAGE in s.kind:
                und_labels[i] = torch.tensor(s.und_labels)
    label_weights = None
    if any(s.label_weights is not None for s in seqs):
        label_weights = torch.ones((b, n), dtype=torch.float32)
        for i, s in enumerate(seqs):
            if s.label_weights is not None:
                if len(s.label_weights) != len(s):
                    raise UnilensError(f"a sequence has {len(s.label_weights)} label weights for {len(s)} positions")
                span = slice(n - len(s), n) if left_pad else slice(0, len(s))
                label_weights[i, span] = torch.tensor(s.label_weights)

    def cat(xs: list[torch.Tensor], dim: int, dtype) -> torch.Tensor:
        return torch.cat(xs) if xs else torch.zeros((0, dim) if dim else (0,), dtype=dtype)

    gen_target_dim = 0 if gen_space.kind == "vq" else gen_space.dim
    return Batch(
        ids=ids,
        kind=kind,
        labels=labels,
        tags=tags,
        attention_mask=kind != PAD,
        und_inputs=cat(und_inputs, und_space.dim, torch.float32),
        gen_inputs=cat(gen_inputs, gen_space.dim, torch.float32),
        gen_targets=cat(gen_targets, gen_target_dim, torch.long if gen_space.kind == "vq" else torch.float32),
        contexts=[s.context for s in seqs],
        images=[s.image for s in seqs],
        gen_weights=cat(gen_weights, 0, torch.float32) if weighted else None,
        und_labels=und_labels,
        label_weights=label_weights,
    )
