"""The VQ tokenizer (LlamaGen VQ's role): a small convolutional VQ-VAE whose codebook (Euclidean, or cosine with
L2-normalised code vectors as in LlamaGen) keeps healthy with EMA updates and dead-code restarts from
vector-quantize-pytorch, and a decoder back to pixels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from unilens.config import from_dict, to_dict
from unilens.errors import UnilensError
from unilens.io import atomic_dir


@dataclass
class VQConfig:
    image_size: int = 128
    downsample: int = 16  # 128 px -> 8 x 8 = 64 tokens
    channels: int = 32
    code_dim: int = 8
    codebook_size: int = 1024
    commitment_weight: float = 0.25
    dead_code_threshold: float = 2.0
    cosine: bool = False  # LlamaGen L2-normalises codes; Euclidean keeps colour (magnitude) at this tiny size


class _Residual(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class VQVAE(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        n_down = cfg.downsample.bit_length() - 1
        if 2**n_down != cfg.downsample:
            raise UnilensError(f"VQ downsample must be a power of two, got {cfg.downsample}")
        # Channels widen as resolution falls; no convolution runs at full resolution (CPU budget).
        chans = [min(cfg.channels * 2**i, 4 * cfg.channels) for i in range(n_down)]
        enc: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(chans):
            enc += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.SiLU()]
            if i > 0:
                enc.append(_Residual(c))
            c_in = c
        enc += [nn.GroupNorm(8, c_in), nn.SiLU(), nn.Conv2d(c_in, cfg.code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = VectorQuantize(
            dim=cfg.code_dim,
            codebook_size=cfg.codebook_size,
            use_cosine_sim=cfg.cosine,
            kmeans_init=True,
            threshold_ema_dead_code=cfg.dead_code_threshold,
            commitment_weight=cfg.commitment_weight,
            decay=0.9,
        )
        dec: list[nn.Module] = [nn.Conv2d(cfg.code_dim, chans[-1], 3, padding=1)]
        for i in reversed(range(n_down)):
            c_out = chans[i - 1] if i > 0 else cfg.channels // 2
            if i > 0:
                dec.append(_Residual(chans[i]))
            dec += [nn.ConvTranspose2d(chans[i], c_out, 4, stride=2, padding=1), nn.SiLU()]
        dec.append(nn.Conv2d(cfg.channels // 2, 3, 3, padding=1))
        self.decoder = nn.Sequential(*dec)

    @property
    def grid(self) -> int:
        return self.cfg.image_size // self.cfg.downsample

    def quantize(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> quantized (B, tokens, code_dim), codes (B, tokens), commitment loss."""
        z = self.encoder(pixels).flatten(2).transpose(1, 2)
        return self.quantizer(z)

    def decode_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        b, n, d = vectors.shape
        g = int(n**0.5)
        return self.decoder(vectors.transpose(1, 2).reshape(b, d, g, g))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        quantized, codes, commit = self.quantize(pixels)
        return self.decode_vectors(quantized), codes, commit


class VQEncoder(nn.Module):
    """What unified models see: codes (B, tokens), their L2-normalised vectors, and decoding codes to pixels."""

    kind = "vq"

    def __init__(self, vqvae: VQVAE):
        super().__init__()
        self.vqvae = vqvae

    @property
    def num_tokens(self) -> int:
        return self.vqvae.grid**2

    @property
    def feature_dim(self) -> int:
        return self.vqvae.cfg.code_dim

    @property
    def codebook_size(self) -> int:
        return self.vqvae.cfg.codebook_size

    @property
    def image_size(self) -> int:
        return self.vqvae.cfg.image_size

    @property
    def codebook(self) -> torch.Tensor:
        """(codebook_size, code_dim): the vectors the decoder reads (L2-normalised when the codebook is cosine)."""
        book = self.vqvae.quantizer.codebook.detach()
        return F.normalize(book, dim=-1) if self.vqvae.cfg.cosine else book

    @torch.no_grad()
    def codes(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vqvae.quantize(pixels)[1]

    def vectors(self, codes: torch.Tensor) -> torch.Tensor:
        return self.codebook.to(codes.device)[codes]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vqvae.decode_vectors(self.vectors(codes))

    def save_pretrained(self, folder: str | Path, overwrite: bool = True, extra: dict | None = None) -> None:
        with atomic_dir(folder, overwrite) as tmp:
            save_file({k: v.contiguous() for k, v in self.vqvae.state_dict().items()}, str(tmp / "model.safetensors"))
            meta = {"kind": "vq", "source": "tiny-vqvae", "config": to_dict(self.vqvae.cfg), **(extra or {})}
            (tmp / "config.json").write_text(json.dumps(meta, indent=2))


def load_vq(folder: str | Path) -> VQEncoder:
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise UnilensError(
            f"no config.json in {folder}: not a VQ encoder folder (train one with `unilens encoders train vq`)"
        )
    meta = json.loads(cfg_path.read_text())
    if meta.get("kind") != "vq":
        raise UnilensError(f"{folder} is not a unilens VQ encoder (kind={meta.get('kind')})")
    vqvae = VQVAE(from_dict(VQConfig, meta["config"]))
    vqvae.load_state_dict(load_file(str(folder / "model.safetensors")))
    return VQEncoder(vqvae.eval())
