"""The semantic encoder (SigLIP's role): a small ViT trained on image-caption pairs with the sigmoid loss of SigLIP,
or a real `SiglipVisionModel` loaded from a local folder. Features are the penultimate layer's patch tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from unilens.config import from_dict, to_dict
from unilens.errors import UnilensError
from unilens.io import atomic_dir


@dataclass
class ViTConfig:
    image_size: int = 128
    patch_size: int = 16
    width: int = 192
    depth: int = 6
    heads: int = 4
    embed_dim: int = 128  # joint image-text space of the contrastive loss


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyViT(nn.Module):
    """Patch embedding, pre-norm transformer blocks, mean-pooled projection for the contrastive loss."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        n = (cfg.image_size // cfg.patch_size) ** 2
        self.patch = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        self.pos = nn.Parameter(torch.randn(1, n, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(cfg.depth))
        self.ln = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.embed_dim)

    @property
    def num_tokens(self) -> int:
        return (self.cfg.image_size // self.cfg.patch_size) ** 2

    @property
    def feature_dim(self) -> int:
        return self.cfg.width

    def hidden_states(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch(pixels).flatten(2).transpose(1, 2) + self.pos
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return states

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, tokens, width): the penultimate block's output, as LLaVA takes SigLIP's."""
        return self.hidden_states(pixels)[-2]

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.hidden_states(pixels)[-1]).mean(dim=1)
        return F.normalize(self.proj(x), dim=-1)


class TextTower(nn.Module):
    """A small transformer over caption tokens, only needed to train the image tower."""

    def __init__(self, vocab_size: int, width: int, embed_dim: int, max_len: int = 96, depth: int = 2):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.randn(1, max_len, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, 4) for _ in range(depth))
        self.ln = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos[:, : ids.shape[1]]
        for block in self.blocks:
            x = block(x, key_padding_mask=~mask)
        x = self.ln(x)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return F.normalize(self.proj(pooled), dim=-1)


def sigmoid_loss(img: torch.Tensor, txt: torch.Tensor, log_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """SigLIP: every image-text pair is a binary problem, positives on the diagonal."""
    logits = img @ txt.T * log_t.exp() + bias
    labels = 2 * torch.eye(len(img), device=img.device) - 1
    return -F.logsigmoid(labels * logits).sum() / len(img)


class SemanticEncoder(nn.Module):
    """What unified models see: `features(pixels)` -> (B, tokens, dim). Wraps our ViT or a HF SigLIP vision model."""

    kind = "semantic"

    def __init__(self, backbone: nn.Module, source: str):
        super().__init__()
        self.backbone = backbone
        self.source = source  # "tiny-vit" or "siglip"

    @property
    def num_tokens(self) -> int:
        if self.source == "siglip":
            c = self.backbone.config
            return (c.image_size // c.patch_size) ** 2
        return self.backbone.num_tokens

    @property
    def feature_dim(self) -> int:
        return self.backbone.config.hidden_size if self.source == "siglip" else self.backbone.feature_dim

    @property
    def image_size(self) -> int:
        return self.backbone.config.image_size if self.source == "siglip" else self.backbone.cfg.image_size

    @torch.no_grad()
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.source == "siglip":
            if pixels.shape[-1] != self.image_size:
                pixels = F.interpolate(pixels, size=self.image_size, mode="bilinear", antialias=True)
            out = self.backbone(pixel_values=pixels, output_hidden_states=True)
            return out.hidden_states[-2]
        return self.backbone.features(pixels)

    def save_pretrained(self, folder: str | Path, overwrite: bool = True, extra: dict | None = None) -> None:
        if self.source != "tiny-vit":
            raise UnilensError(
                "only the embedded tiny ViT is saved by unilens; a SigLIP checkpoint is already a folder"
            )
        with atomic_dir(folder, overwrite) as tmp:
            save_file(self.backbone.state_dict(), str(tmp / "model.safetensors"))
            meta = {"kind": "semantic", "source": "tiny-vit", "config": to_dict(self.backbone.cfg), **(extra or {})}
            (tmp / "config.json").write_text(json.dumps(meta, indent=2))


def load_semantic(folder: str | Path) -> SemanticEncoder:
    """A folder saved by `unilens encoders train semantic`, or a HF SigLIP (vision or full) checkpoint folder."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise UnilensError(f"no config.json in {folder}: not an encoder folder (train one or give a SigLIP folder)")
    meta = json.loads(cfg_path.read_text())
    if meta.get("kind") == "semantic":
        vit = TinyViT(from_dict(ViTConfig, meta["config"]))
        vit.load_state_dict(load_file(str(folder / "model.safetensors")))
        return SemanticEncoder(vit.eval(), "tiny-vit")
    if meta.get("model_type") in ("siglip", "siglip_vision_model", "siglip2", "siglip2_vision_model"):
        from transformers import SiglipVisionModel

        model = SiglipVisionModel.from_pretrained(str(folder), local_files_only=True)
        return SemanticEncoder(model.eval(), "siglip")
    raise UnilensError(
        f"{folder} holds neither a unilens semantic encoder nor a SigLIP model (model_type={meta.get('model_type')})"
    )
