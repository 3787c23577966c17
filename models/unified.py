"""The unified model: frozen-encoder spaces -> adapters -> one LLM -> text head and image head.

Variants name the understanding input space and the generation space: sem-sem, sem-vq, vq-sem, vq-vq.
Hook points (nn.Identity, so plain forward hooks attach): vision_in.hook_out, gen_in.hook_out, gen_head.hook_in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.reader import HEADS
from models.sequence import BOI, EOI, GEN_IMAGE, UND_IMAGE, Batch
from unilens.errors import UnilensError

VARIANTS = ("sem-sem", "sem-vq", "vq-sem", "vq-vq")
SPACE_NAMES = {"sem": "semantic", "vq": "vq"}


@dataclass
class ModelConfig:
    variant: str = "vq-vq"
    llm: str = "runs/embedded/lm"
    semantic_encoder: str = "runs/embedded/semantic"
    vq_encoder: str = "runs/embedded/vq"
    und_adapter: str = "auto"  # auto: mlp for semantic input, linear for vq input (the paper's choice)
    gen_adapter: str = "auto"
    share_gen_adapter: str = "auto"  # auto: shared when input and output spaces are the same (X-X)
    image_loss_weight: float = -1.0  # < 0: 1.0 for semantic (cosine), 0.2 for vq (cross-entropy)
    input_distortion: float = 0.0  # strength s of a frozen invertible affine map on the input space
    output_distortion: float = 0.0  # our extension: the same on the generation space
    distortion_seed: int = 0
    # Learned position embeddings of image-token slots, added after the adapters: false (none, RoPE only), true or
    # "slot" (one vector per slot), "grid" (a row vector plus a column vector: every left-column token shares one
    # direction from the start). Why offered: RoPE alone gives no absolute grid position, and VQ code vectors carry
    # none either. On the embedded default neither kind taught the models an icon's column (docs/results recipe_search).
    image_positions: bool | str = False
    # "raster" (row by row, as every encoder emits them) or "transposed" (column by column): the order in which the
    # understanding image's tokens enter the LLM. A diagnostic: it tests whether what the models learn depends on which
    # tokens are contiguous in the sequence (on the embedded default it did not: the row is learned either way).
    image_order: str = "raster"
    # During training, this fraction of the generated image's input tokens (teacher forcing) is replaced by another
    # token of the batch; the targets stay; decoding never corrupts. Why offered: with every earlier true token given,
    # most of an image is predictable from its neighbours, leaving the prompt little of the loss. Measured on the
    # dense vq-vq generation data (docs/results/2026-12-02): 0.5 made the prompt count earlier in one 625-step run,
    # but over 1875 steps the uncorrupted control followed its prompts as well or better, so it is not needed there.
    gen_input_corruption: float = 0.0
    # During training, this fraction of generation records (drawn anew each step) gets a request that names no
    # attribute (tasks.templates.unconditional). Why: classifier-free guidance at decoding (`unilens eval
    # --guidance`) needs the model's image distribution without a prompt to contrast the prompted one with.
    gen_prompt_dropout: float = 0.0
    # Rank r of a per-slot linear map added to the understanding adapter's output (0: off): slot s gets
    # V (W_s x_s), with W_s (r x d_in) its own and V (d x r) shared, V starting at zero so the model starts as without
    # it. Why offered: the semantic encoder carries the hour spread over every token (a linear probe over all 64
    # tokens reads it, one over their average does not: docs/results/2026-12-03), and an attention head that starts
    # near uniform sees only that average. With per-slot maps the average of the image's tokens is itself a rank-r
    # linear read of the whole image, so a uniform head starts where the all-token probe is. On the embedded default
    # (rank 16, sem-sem, 40000 time questions) it did not help: the loss stayed input-blind and the map's average read
    # the hour at 0.150 (docs/results/2026-12-05). The hook vision_in.hook_out holds the shared adapter's part alone;
    # the probes' "adapter" site (und_embed) holds the sum.
    und_slot_rank: int = 0
    # Auxiliary attribute losses at the understanding image, e.g. {hour: 1.0} (empty: off): a linear head per
    # attribute reads it from the average of the image's embeddings (after the adapter, the per-slot map and the slot
    # vectors, each token through block 0's input norm), and its cross-entropy, times the weight, joins the loss. The
    # heads touch nothing the LLM sees; their gradient trains the adapter and the per-slot map to put the attribute
    # into the tokens' average, where an attention head that starts near uniform looks first. Attributes:
    # models.reader.HEADS. Why offered: semantic input never read the hour (docs/results/2026-12-03, 2026-12-05), and
    # und_slot_rank alone did not train the map into an hour reader. It hands the adapters the world's labels, so keep
    # it off in any run that tests where knowledge lives.
    und_aux_loss: dict[str, float] = field(default_factory=dict)
    # Every image token the LLM reads (the understanding image's and the generated image's inputs, after the slot
    # vectors) rescaled to this multiple of the mean norm of the LLM's text embeddings (0: off, the adapters set the
    # scale). Why offered: nothing bounds the adapters' output scale and the blocks' input norms make the loss blind
    # to it, so it drifts. On the embedded default the semantic MLP adapter's tokens reached 250-1100 times the text
    # embeddings' norm (the VQ linear adapter's about 7; docs/results/2026-12-05, stop 35). A token that large owns
    # its residual stream: the blocks' writes at its position barely move it, so a generated image's positions cannot
    # take in the prompt (sem-sem's mixed run from the hour-head stage followed no prompt and read no image). At 7x
    # it was not enough on its own: a semantic time run stayed input-blind and a mixed sem-sem run at half its steps
    # still ignored image and prompt (same write-up). The probes' "adapter" site (und_embed) holds the tokens before
    # the slot vectors and this rescale.
    image_token_norm: float = 0.0
    # How each side's encoder features are normalised before its adapter (and, for semantic outputs, what the head
    # regresses on): "standardise" (per dimension) or "whiten" (ZCA with an eigenvalue floor, WhiteningNorm). Why
    # offered: the embedded semantic space's eigenvalues span 4.5 x 10^5 and what prompts name lives mostly in its weak
    # directions, so under per-dimension standardisation a cosine loss or a gradient step hardly sees it
    # (docs/results/2026-12-05, stop 36). Evaluation measures cosines in the standardised space either way.
    und_feature_norm: str = "standardise"
    gen_feature_norm: str = "standardise"

    def __post_init__(self) -> None:
        for name, what in (
            ("gen_input_corruption", "generated-image input tokens replaced during training"),
            ("gen_prompt_dropout", "generation records trained without their prompt"),
        ):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise UnilensError(f"{name} must be in [0, 1), got {value}: it is the fraction of {what} (0: off)")
        rank = self.und_slot_rank
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise UnilensError(f"und_slot_rank must be a whole number >= 0 (0: off), got {rank!r}")
        check_aux_loss(self.und_aux_loss)
        for name in ("und_feature_norm", "gen_feature_norm"):
            if getattr(self, name) not in FEATURE_NORMS:
                raise UnilensError(f"{name} must be one of {list(FEATURE_NORMS)}, got {getattr(self, name)!r}")
        scale = self.image_token_norm
        if isinstance(scale, bool) or not (isinstance(scale, int | float) and math.isfinite(scale) and scale >= 0):
            raise UnilensError(
                f"image_token_norm must be a number >= 0 (a multiple of the text embeddings' mean norm; 0: off), "
                f"got {scale!r}"
            )

    @property
    def position_kind(self) -> str:
        kinds = {False: "none", "none": "none", True: "slot", "slot": "slot", "grid": "grid"}
        if not isinstance(self.image_positions, (bool, str)) or self.image_positions not in kinds:
            raise UnilensError(f"image_positions must be false, true (slot) or grid, got {self.image_positions!r}")
        return kinds[self.image_positions]

    @property
    def spaces(self) -> tuple[str, str]:
        if self.variant not in VARIANTS:
            raise UnilensError(f"unknown variant '{self.variant}'; choose one of {list(VARIANTS)}")
        und, gen = self.variant.split("-")
        return SPACE_NAMES[und], SPACE_NAMES[gen]

    def adapter_kind(self, space: str, which: str) -> str:
        kind = self.und_adapter if which == "und" else self.gen_adapter
        if kind == "auto":
            return "mlp" if space == "semantic" else "linear"
        if kind not in ("linear", "mlp"):
            raise UnilensError(f"{which}_adapter must be linear, mlp or auto, got '{kind}'")
        return kind

    @property
    def shared(self) -> bool:
        und, gen = self.spaces
        if self.share_gen_adapter == "auto":
            return und == gen
        share = str(self.share_gen_adapter).lower() in ("true", "1", "yes")
        if share and und != gen:
            raise UnilensError(
                f"variant {self.variant} has different input and output spaces: set share_gen_adapter false"
            )
        return share


def check_aux_loss(weights: dict[str, float]) -> None:
    if not isinstance(weights, dict):
        raise UnilensError(f"und_aux_loss must map attributes to weights, e.g. {{hour: 1.0}}; got {weights!r}")
    for attribute, weight in weights.items():
        if attribute not in HEADS:
            raise UnilensError(f"und_aux_loss names '{attribute}', which no head reads; choose from {sorted(HEADS)}")
        if isinstance(weight, bool) or not (isinstance(weight, int | float) and math.isfinite(weight) and weight > 0):
            raise UnilensError(f"und_aux_loss[{attribute}] must be a positive number, got {weight!r}")


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding on either side (left-padded decoding prompts included)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class Adapter(nn.Module):
    """`linear` = Linear(in, d); `mlp` = Linear(in, d) -> GELU -> Linear(d, d)."""

    def __init__(self, kind: str, d_in: int, d_model: int):
        super().__init__()
        self.kind = kind
        if kind == "linear":
            self.net = nn.Linear(d_in, d_model)
        else:
            self.net = nn.Sequential(nn.Linear(d_in, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.hook_out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_out(self.net(x))

    @torch.no_grad()
    def match_output_rms(self, target: float, seed: int = 0) -> None:
        """Rescale the last layer so standardised inputs give outputs at the LLM's token-embedding scale: image
        positions then start as ordinary residual-stream citizens instead of dominating every later layer."""
        g = torch.Generator().manual_seed(seed)
        last = self.net if isinstance(self.net, nn.Linear) else self.net[-1]
        first = self.net if isinstance(self.net, nn.Linear) else self.net[0]
        x = torch.randn(1024, first.in_features, generator=g)
        rms = self.net(x).pow(2).mean().sqrt().item()
        last.weight.mul_(target / rms)
        last.bias.mul_(target / rms)


class FeatureNorm(nn.Module):
    """Frozen per-dimension standardisation of an encoder space, fitted on the training images' features.

    Why: raw encoder features share a large constant component (the embedded ViT's tokens have norm ~52 with an
    image-to-image std of ~3), so unnormalised they drown the image-specific signal and dwarf the LLM's token
    embeddings (norm ~0.5). The statistics are buffers saved in every checkpoint, so evaluation on another dataset
    uses the training statistics."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp(min=1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std.to(z.dtype) + self.mean.to(z.dtype)

    def standardised(self, x: torch.Tensor) -> torch.Tensor:
        """Per-dimension standardisation, whatever this norm does: the space evaluation measures cosines in, so that
        runs with other feature norms are scored alike."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def covariance(self) -> torch.Tensor | None:
        """The covariance of this norm's outputs where it is not taken to be white (None: white enough)."""
        return None


class WhiteningNorm(FeatureNorm):
    """Frozen ZCA whitening of an encoder space, fitted on the training images' features: x -> (x - mean) V
    diag(1 / s) V^T, with V, lambda the eigenvectors and eigenvalues of the features' covariance and
    s = sqrt(max(lambda, floor * max lambda)). Invertible; ZCA keeps the output axes near the input's.

    Why: per-dimension standardisation leaves the embedded semantic encoder's space very unequal: on the dense world
    its top 10 of 192 principal directions hold 98.5% of the variance and its eigenvalues span 4.5 x 10^5, so a
    cosine loss or a gradient step hardly sees the weak directions. What prompts name lives mostly there
    (docs/results/2026-12-05, stop 36): at the weather icon's tokens the prompt's attributes explain 5% of the
    standardised per-slot loss and 60% of the whitened one. The floor keeps directions near fp16's resolution (the
    cache's) from being blown up."""

    FLOOR = 1e-4

    def __init__(self, dim: int):
        super().__init__(dim)
        self.register_buffer("basis", torch.eye(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("variance", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        super().fit(x)
        variance, basis = torch.linalg.eigh(torch.cov(x.reshape(-1, x.shape[-1]).double().T))
        variance = variance.clamp(min=0)
        self.basis.copy_(basis.float())
        self.variance.copy_(variance.float())
        self.scale.copy_(variance.clamp(min=self.FLOOR * variance.max().item()).sqrt().clamp(min=1e-8).float())

    # In float32 whatever the input's dtype: the weakest kept directions are scaled up 100x, and bf16 rounding with it.
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (((x.float() - self.mean) @ self.basis / self.scale) @ self.basis.T).to(x.dtype)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return (((z.float() @ self.basis) * self.scale) @ self.basis.T + self.mean).to(z.dtype)

    def covariance(self) -> torch.Tensor:
        """Identity except in the directions under the floor, which keep variance lambda / s^2 < 1."""
        return (self.basis * (self.variance / self.scale.pow(2))) @ self.basis.T


FEATURE_NORMS = {"standardise": FeatureNorm, "whiten": WhiteningNorm}


class AffineDistortion(nn.Module):
    """y = x A + b with A = Q diag(scales), Q orthogonal, scales in [1-s, 1+s]: frozen and invertible for s < 1."""

    def __init__(self, dim: int, strength: float, seed: int):
        super().__init__()
        if not 0 <= strength < 1:
            raise UnilensError(f"distortion strength must be in [0, 1), got {strength}")
        self.strength = strength
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
        scales = 1 + strength * (2 * torch.rand(dim, generator=g) - 1)
        a = q * scales if strength > 0 else torch.eye(dim)
        b = 0.1 * strength * torch.randn(dim, generator=g)
        self.register_buffer("A", a)
        self.register_buffer("b", b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.strength == 0 else x @ self.A + self.b

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.strength == 0 else torch.linalg.solve(self.A.T, (y - self.b).T).T

    def output_rms(self, covariance: torch.Tensor | None = None) -> float:
        """sqrt(E ||x A + b||^2) for zero-mean x: sqrt(tr(A^T C A) + ||b||^2), with C the covariance of x (default:
        white, giving sqrt(||A||_F^2 + ||b||^2))."""
        a = self.A  # the identity when strength is 0
        spread = a.pow(2).sum() if covariance is None else (a * (covariance.to(a) @ a)).sum()
        return (spread + self.b.pow(2).sum()).sqrt().item()


def corrupt_rows(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Each row replaced, with probability `rate`, by a row drawn at random from `x` (a token of another place or
    image, so the replacement is a plausible token, just not the right one). Drawn from the CPU generator, which
    checkpoints save, so a resumed run corrupts as an uninterrupted one would, on any device. (Data-parallel
    processes draw alike for different rows: such a run matches one process in distribution, not bit for bit.)"""
    replaced = (torch.rand(len(x)) < rate).to(x.device)
    donors = torch.randint(len(x), (len(x),)).to(x.device)
    return torch.where(replaced[:, None], x[donors], x)


def grid_side(tokens: int, what: str) -> int:
    """The side of a square token grid; `what` names the option that needs one."""
    side = round(tokens**0.5)
    if side * side != tokens:
        raise UnilensError(f"{what} needs a square token grid, got {tokens} tokens")
    return side


class SlotEmbedding(nn.Module):
    """One vector per image-token slot (kind "slot"), or a row vector plus a column vector on the square token grid
    (kind "grid", fewer parameters and shared directions per row and per column). Called, it gives (T, d)."""

    def __init__(self, kind: str, tokens: int, d: int):
        super().__init__()
        self.kind = kind
        if kind == "slot":
            self.table = nn.Parameter(torch.randn(tokens, d) * 0.02)
            return
        side = grid_side(tokens, "image_positions grid (use slot instead)")
        self.rows = nn.Parameter(torch.randn(side, d) * 0.02)
        self.cols = nn.Parameter(torch.randn(side, d) * 0.02)

    def forward(self) -> torch.Tensor:
        if self.kind == "slot":
            return self.table
        return (self.rows[:, None] + self.cols[None, :]).reshape(-1, self.rows.shape[1])


class SlotwiseLowRank(nn.Module):
    """Token t of an image (slot s = t mod T) -> V (W_s x_t): a linear map of its own per slot, of rank r, into the
    model width. V starts at zero (the map adds nothing until trained) and W_s at the scale that keeps W_s x of
    standardised features near unit variance. Called on whole images' tokens in slot order, (n * T, d_in)."""

    def __init__(self, tokens: int, d_in: int, rank: int, d_model: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.down = nn.Parameter(torch.randn(tokens, rank, d_in, generator=g) / d_in**0.5)
        self.up = nn.Parameter(torch.zeros(d_model, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.down.shape[0]
        if len(x) % tokens:
            raise UnilensError(f"und_slot_rank maps whole images of {tokens} tokens; got {len(x)} rows")
        z = torch.einsum("ntd,trd->ntr", x.view(-1, tokens, x.shape[-1]), self.down.to(x.dtype))
        return (z @ self.up.to(x.dtype).T).reshape(len(x), -1)


class AttributeHeads(nn.Module):
    """und_aux_loss's linear heads on the average of an image's embeddings, zero at the start (so that building them
    draws nothing from the global generator and a model with them starts where one without them does)."""

    def __init__(self, weights: dict[str, float], d_model: int):
        super().__init__()
        self.weights = dict(sorted(weights.items()))
        self.heads = nn.ParameterDict({a: nn.Parameter(torch.zeros(HEADS[a], d_model + 1)) for a in self.weights})

    def forward(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """(n, d) -> each attribute's logits (n, classes)."""
        return {a: pooled @ w[:, :-1].T.to(pooled.dtype) + w[:, -1].to(pooled.dtype) for a, w in self.heads.items()}

    def loss_sum(self, pooled: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted sum over attributes of the cross-entropy summed over images, and per attribute the number of
        images its head reads right; `labels` (n, len(HEADS)) in HEADS order, -100 where an image has no label."""
        total, correct = pooled.sum() * 0, {}
        for a, logits in self(pooled).items():
            column = labels[:, list(HEADS).index(a)]
            ce = F.cross_entropy(logits.float(), column, ignore_index=-100, reduction="sum")
            total = total + self.weights[a] * ce
            correct[a] = (logits.argmax(-1) == column).sum().float()
        return total, correct


class GenHead(nn.Module):
    def __init__(self, d_model: int, d_out: int):
        super().__init__()
        self.hook_in = nn.Identity()
        self.proj = nn.Linear(d_model, d_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(self.hook_in(h))


class UnifiedVLM(nn.Module):
    """LLM + adapters + image head. `llm` is a HF causal LM (possibly wrapped by peft)."""

    def __init__(
        self,
        cfg: ModelConfig,
        llm: nn.Module,
        und_dim: int,
        gen_dim: int,
        gen_vocab: int | None,
        und_tokens: int = 0,
        gen_tokens: int = 0,
    ):
        super().__init__()
        self.cfg = cfg
        self.llm = llm
        und_space, gen_space = cfg.spaces
        d = self.base_llm.config.hidden_size
        self.d_model = d
        self.vision_in = Adapter(cfg.adapter_kind(und_space, "und"), und_dim, d)
        self.gen_in = self.vision_in if cfg.shared else Adapter(cfg.adapter_kind(gen_space, "gen"), gen_dim, d)
        self.gen_head = GenHead(d, gen_vocab if gen_space == "vq" else gen_dim)
        self.boi = nn.Parameter(torch.randn(d) * 0.02)
        self.eoi = nn.Parameter(torch.randn(d) * 0.02)
        self.und_tokens = und_tokens
        if cfg.position_kind != "none":
            if und_tokens <= 0 or gen_tokens <= 0:
                raise UnilensError("image_positions needs the encoders' token counts (und_tokens, gen_tokens)")
            self.und_pos = SlotEmbedding(cfg.position_kind, und_tokens, d)
            self.gen_pos = SlotEmbedding(cfg.position_kind, gen_tokens, d)
        if cfg.und_slot_rank:
            if und_tokens <= 0:
                raise UnilensError("und_slot_rank needs the understanding encoder's token count (und_tokens)")
            self.und_slot = SlotwiseLowRank(und_tokens, und_dim, cfg.und_slot_rank, d)
        if cfg.und_aux_loss:
            self.und_aux = AttributeHeads(cfg.und_aux_loss, d)
        table = self.base_llm.get_input_embeddings().weight.detach().float()
        token_rms = table.pow(2).mean().sqrt().item()
        # the text embeddings' mean norm, from the base LLM as loaded (image_token_norm's unit; not saved)
        self.register_buffer("text_token_norm", table.norm(dim=-1).mean(), persistent=False)
        self.vision_in.match_output_rms(token_rms)
        if not cfg.shared:
            self.gen_in.match_output_rms(token_rms)
        self.norm_in = FEATURE_NORMS[cfg.und_feature_norm](und_dim)
        self.norm_out = FEATURE_NORMS[cfg.gen_feature_norm](gen_dim)
        self.distort_in = AffineDistortion(und_dim, cfg.input_distortion, cfg.distortion_seed)
        self.distort_out = AffineDistortion(gen_dim, cfg.output_distortion, cfg.distortion_seed + 1)
        self.gen_space = gen_space
        weight = cfg.image_loss_weight
        self.image_loss_weight = weight if weight >= 0 else (0.2 if gen_space == "vq" else 1.0)

    def und_embed(self, raw: torch.Tensor) -> torch.Tensor:
        """Encoder-space input features (whole images, raster order) -> LLM embeddings (normalise, distort, adapt,
        plus the per-slot map when configured), in the configured token order."""
        x = self.distort_in(self.norm_in(self.ordered(raw)))
        out = self.vision_in(x)
        return out + self.und_slot(x) if self.cfg.und_slot_rank else out

    def ordered(self, raw: torch.Tensor) -> torch.Tensor:
        if self.cfg.image_order == "raster":
            return raw
        if self.cfg.image_order != "transposed":
            raise UnilensError(f"image_order must be raster or transposed, got '{self.cfg.image_order}'")
        side = grid_side(self.und_tokens, "image_order transposed")
        return raw.reshape(-1, side, side, raw.shape[-1]).transpose(1, 2).reshape(raw.shape)

    def gen_embed(self, raw: torch.Tensor) -> torch.Tensor:
        """Generation-space inputs (features or code vectors) -> LLM embeddings."""
        return self.gen_in(self.distort_out(self.norm_out(raw)))

    def gen_target(self, raw: torch.Tensor) -> torch.Tensor:
        """The semantic head's regression target: the normalised, distorted generation space."""
        return self.distort_out(self.norm_out(raw))

    def target_norm(self) -> float:
        """The root-mean-square norm of a semantic target token: exactly sqrt(D) for standardised features without
        distortion; with one, exact for decorrelated features (whitened ones are, up to their floor, which counts)."""
        return self.distort_out.output_rms(self.norm_out.covariance())

    def at_target_scale(self, head: torch.Tensor) -> torch.Tensor:
        """Semantic head outputs rescaled to the targets' norm. Why: the cosine loss trains the direction and leaves
        the norm free (2.9x the targets' at step 188 of the dense sem-sem run), while decoding feeds each output back
        through the adapter, which has only seen targets, and maps it to the encoder space, where scale is meaning."""
        return head * (self.target_norm() / head.norm(dim=-1, keepdim=True).clamp(min=1e-6))

    def gen_output_to_space(self, head: torch.Tensor) -> torch.Tensor:
        """Semantic head output -> the encoder's own feature space (inverse of gen_target)."""
        return self.norm_out.inverse(self.distort_out.inverse(head))

    @torch.no_grad()
    def fit_feature_norms(self, und_sample: torch.Tensor, gen_sample: torch.Tensor) -> None:
        self.norm_in.fit(und_sample)
        self.norm_out.fit(gen_sample)

    @property
    def base_llm(self) -> nn.Module:
        """The HF model under any peft wrapper (LoRA layers stay injected in it)."""
        get = getattr(self.llm, "get_base_model", None)
        return get() if get is not None else self.llm

    @property
    def decoder(self) -> nn.Module:
        return self.base_llm.get_decoder()

    @property
    def blocks(self) -> nn.ModuleList:
        return self.decoder.layers

    def with_slots(self, x: torch.Tensor, side: str, slot: int | None = None) -> torch.Tensor:
        """Add the slot embeddings (if the model has them) to adapter outputs: `x` holds whole images' tokens in
        slot order (n_images * T, d), or, with `slot`, one token per row at that slot (decoding). With
        image_token_norm, the sums are then rescaled to that norm: these are the tokens the LLM reads."""
        if self.cfg.position_kind != "none":
            pos = (self.und_pos if side == "und" else self.gen_pos)().to(x.dtype)
            x = x + pos[slot] if slot is not None else (x.view(-1, *pos.shape) + pos).view(x.shape)
        if not self.cfg.image_token_norm:
            return x
        target = self.cfg.image_token_norm * self.text_token_norm
        return x * (target / x.norm(dim=-1, keepdim=True).clamp(min=1e-6)).to(x.dtype)

    def embed(self, batch: Batch) -> torch.Tensor:
        emb = self.base_llm.get_input_embeddings()(batch.ids)
        emb = emb.clone()
        if batch.und_inputs.numel():
            und = self.with_slots(self.und_embed(batch.und_inputs.to(emb.dtype)), "und")
            emb[batch.kind == UND_IMAGE] = und.to(emb.dtype)
        if batch.gen_inputs.numel():
            raw = batch.gen_inputs
            if self.training and self.cfg.gen_input_corruption > 0:
                raw = corrupt_rows(raw, self.cfg.gen_input_corruption)
            gen = self.with_slots(self.gen_embed(raw.to(emb.dtype)), "gen")
            emb[batch.kind == GEN_IMAGE] = gen.to(emb.dtype)
        emb[batch.kind == BOI] = self.boi.to(emb.dtype)
        emb[batch.kind == EOI] = self.eoi.to(emb.dtype)
        return emb

    def hidden(self, batch: Batch, inputs_embeds: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """Final hidden states (after the LLM's last norm)."""
        emb = self.embed(batch) if inputs_embeds is None else inputs_embeds
        mask = batch.attention_mask.long()
        out = self.decoder(inputs_embeds=emb, attention_mask=mask, position_ids=positions(mask), use_cache=False, **kw)
        return out.last_hidden_state

    def text_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.base_llm.get_output_embeddings()(h)

    def forward(
        self,
        batch: Batch,
        text_norm: float | torch.Tensor | None = None,
        image_norm: float | torch.Tensor | None = None,
        text_weights: torch.Tensor | None = None,
        aux_norm: float | torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss = text CE + alpha x image loss, each a sum over this batch's targets divided by `*_norm` (default:
        this batch's own count, i.e. a mean). Data-parallel ranks pass the global counts, so that summing their
        gradients gives exactly the single-process gradient of the whole global batch. `text_weights` (B, L), from
        `sequence.text_loss_weights`, weighs each label's CE; the default count is then their sum. `batch.gen_weights`
        weighs each generated token's loss the same way. With und_aux_loss and labelled images, the attribute heads'
        weighted cross-entropy (summed over images, divided by `aux_norm` or this batch's labelled images) is added to
        the loss and reported as aux_loss."""
        emb = self.embed(batch)
        h = self.hidden(batch, inputs_embeds=emb)
        text_mask = batch.labels != -100
        zero = h.sum() * 0
        text_loss = zero
        if text_mask.any():
            logits, targets = self.text_logits(h[text_mask]).float(), batch.labels[text_mask]
            if text_weights is None:
                text_sum, count = F.cross_entropy(logits, targets, reduction="sum"), text_mask.sum()
            else:
                weights = text_weights[text_mask].float()
                text_sum = (F.cross_entropy(logits, targets, reduction="none") * weights).sum()
                count = weights.sum()
            text_loss = text_sum / (text_norm if text_norm is not None else count)
        pred_mask = batch.gen_predict_mask
        image_loss = zero
        if pred_mask.any():
            out = self.gen_head(h[pred_mask]).float()
            if self.gen_space == "vq":
                per_token = F.cross_entropy(out, batch.gen_targets, reduction="none")
            else:
                per_token = 1 - F.cosine_similarity(out, self.gen_target(batch.gen_targets.float()), dim=-1)
            if batch.gen_weights is not None:
                per_token = per_token * batch.gen_weights.to(per_token.device)
            image_loss = per_token.sum() / (image_norm if image_norm is not None else batch.image_loss_count)
        loss = text_loss + self.image_loss_weight * image_loss
        out = {"loss": loss, "text_loss": text_loss.detach(), "image_loss": image_loss.detach()}
        if self.cfg.und_aux_loss and batch.und_labels is not None:
            norm = aux_norm if aux_norm is not None else batch.und_label_count.clamp(min=1)
            aux, correct = self.und_aux.loss_sum(self.image_average(emb, batch), batch.und_labels)
            out["loss"] = loss + aux / norm
            out["aux_loss"] = (aux / norm).detach()
            out.update({f"aux_accuracy_{a}": (c / norm).detach() for a, c in correct.items()})
        return out

    def first_norm(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings as block 0's attention reads them: through its input norm (Llama/Qwen2 `input_layernorm`)."""
        norm = getattr(self.blocks[0], "input_layernorm", None)
        return norm(x) if norm is not None else x

    def image_average(self, emb: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Per row, the average of its understanding image's embeddings, each through block 0's input norm first
        (zeros for a row without an image). Why normed: an attention head that weighs the image's tokens evenly reads
        this average, not the raw one; trained on the raw average, the per-slot map grew its tokens to 80 times the
        adapter's scale, and a sum of such tokens normed one by one no longer carries what their raw average did
        (docs/results/2026-12-05, aux part)."""
        mask = (batch.kind == UND_IMAGE).to(emb.dtype).unsqueeze(-1)
        return (self.first_norm(emb) * mask).sum(1) / mask.sum(1).clamp(min=1)
