"""Fréchet Inception Distance, as an option: the Inception weights cannot be downloaded here, so the user supplies
them as a local TorchScript file (for example StyleGAN3's `inception-2015-12-05.pt`). The module must map float
images (N, 3, 299, 299) with values in [0, 255] to features (N, D); a module that takes `return_features=True`
(as that file does) is called with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

from unilens.errors import UnilensError


def load_feature_net(path: str | Path) -> torch.jit.ScriptModule:
    path = Path(path)
    if not path.is_file():
        raise UnilensError(
            f"FID weights not found at {path}: pass a local TorchScript Inception file (see models/fid.py)"
        )
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as exc:
        raise UnilensError(f"{path} is not a TorchScript module ({exc}); FID needs a scripted feature network") from exc


@torch.no_grad()
def image_features(net, pixels: np.ndarray, batch_size: int = 32, size: int = 299) -> np.ndarray:
    """uint8 images (N, H, W, 3) -> (N, D) features."""
    out = []
    for start in range(0, len(pixels), batch_size):
        x = torch.from_numpy(np.asarray(pixels[start : start + batch_size])).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        try:
            feats = net(x, return_features=True)
        except (TypeError, RuntimeError):
            feats = net(x)
        out.append(feats.reshape(len(x), -1).float().cpu().numpy())
    return np.concatenate(out)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets (N, D)."""
    if len(a) < 2 or len(b) < 2:
        raise UnilensError("FID needs at least two images on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise, as the reference implementations do
        eps = 1e-6 * np.eye(len(s_a))
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def fid(net, generated: np.ndarray, reference: np.ndarray) -> float:
    return frechet_distance(image_features(net, generated), image_features(net, reference))
