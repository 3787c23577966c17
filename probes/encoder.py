"""What an image space carries before any LLM sees it: linear probes on a frozen encoder's model inputs.

A unified model that cannot answer "what is the weather?" is either blind (its input space does not carry the
weather) or has not learned to read what it is given. These probes tell the two apart. They see exactly what the
model's input adapter sees (semantic features, or the VQ code vectors), are fitted on the dataset's training images
and scored on its test images, which share no image with them. Poolings:

    mean            the tokens averaged: what a reader gets without knowing where in the image to look
    tokens          every token kept and concatenated: what a reader that attends to the right tokens can reach
    weather_region  the tokens that draw the weather icon averaged, wherever it sits in that image: what a reader
    battery_region  that already knows where the item is gets (the same for the battery)
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from models.encoders.semantic import load_semantic
from models.encoders.vq import load_vq
from models.features import build_space
from probes.activations import REGION_GROUPS, region_token_mask, watch_labels
from probes.linear import NUMERIC, make_probe
from tasks.records import WorldDataset
from tasks.world import Watch
from unilens.errors import UnilensError

ATTRIBUTES = ("weather", "weather_pos", "battery_pos", "battery_decile", "hour", "minute")
POOLS = ("mean", "tokens")  # the default poolings
ALL_POOLS = (*POOLS, *REGION_GROUPS)


def split_images(dataset: WorldDataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per image (id and labels) for the training images and for the test images not among them."""

    def table(records: list[dict], exclude: set[str]) -> pd.DataFrame:
        rows, seen = [], set(exclude)
        for rec in records:
            if rec["image"] in seen or "watch" not in rec:
                continue
            seen.add(rec["image"])
            rows.append({"image": rec["image"], "watch": rec["watch"], **watch_labels(Watch.from_dict(rec["watch"]))})
        return pd.DataFrame(rows)

    train = table(dataset.train, set())
    test = table(dataset.test, set(train["image"]) if len(train) else set())
    if len(train) < 10 or len(test) < 10:
        raise UnilensError(
            f"{dataset.folder} has {len(train)} training and {len(test)} separate test images with world labels; "
            "encoder probes need at least 10 of each (make the dataset with more images)"
        )
    return train, test


def model_inputs(space, images: list[str]) -> np.ndarray:
    """(N, tokens, D): what the input adapter receives for each image."""
    return np.stack([space.inputs(i).float().numpy() for i in images])


def pooled(x: np.ndarray, pool: str, watches: list[dict] | None = None) -> np.ndarray:
    """(N, D) for 'mean' and the region poolings (those need each image's `watches`, raster token order),
    (N, tokens x D) for 'tokens'."""
    if pool not in ALL_POOLS:
        raise UnilensError(f"unknown pooling '{pool}': use one of {', '.join(ALL_POOLS)}")
    if pool in REGION_GROUPS:
        if watches is None or len(watches) != len(x):
            raise UnilensError(f"pooling '{pool}' needs one watch per image")
        mask = region_token_mask([{"watch": w} for w in watches], pool, x.shape[1]).numpy()
        return np.stack([x[i, np.flatnonzero(m)].mean(0) for i, m in enumerate(mask)])
    return x.mean(axis=1) if pool == "mean" else x.reshape(len(x), -1)


def _score_ci(stat, y: np.ndarray, pred: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """The statistic and its 95% percentile bootstrap CI, test images resampled."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), size=len(y))
        draws.append(stat(y[i], pred[i]))
    return stat(y, pred), float(np.nanquantile(draws, 0.025)), float(np.nanquantile(draws, 0.975))


def _accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(y == pred))


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - ((y - pred) ** 2).sum() / total) if total > 0 else float("nan")


def encoder_probe(
    space,
    dataset: WorldDataset,
    attributes: tuple[str, ...] = ATTRIBUTES,
    pools: tuple[str, ...] = POOLS,
    name: str = "encoder",
    n_boot: int = 1000,
    seed: int = 0,
    **probe_kw,
) -> pd.DataFrame:
    """Tidy rows, one per attribute x pooling: test score with a 95% CI over test images, the majority baseline, and
    whether the probe's solver converged (an unconverged probe gives a lower bound on what the space carries)."""
    train, test = split_images(dataset)
    unknown = [a for a in attributes if a not in train.columns]
    if unknown:
        raise UnilensError(f"unknown attribute(s) {unknown}: encoder probes know {', '.join(ATTRIBUTES)}")
    rows = []
    inputs_train, inputs_test = model_inputs(space, list(train["image"])), model_inputs(space, list(test["image"]))
    for pool in pools:
        X_train = pooled(inputs_train, pool, list(train["watch"]))
        X_test = pooled(inputs_test, pool, list(test["watch"]))
        for attribute in attributes:
            y_train, y_test = train[attribute].to_numpy(), test[attribute].to_numpy()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pred = make_probe(attribute, **probe_kw).fit(X_train, y_train).predict(X_test)
            row = {"encoder": name, "space": space.kind, "attribute": attribute, "pool": pool}
            if attribute in NUMERIC:
                score, low, high = _score_ci(_r2, y_test, pred, n_boot, seed)
                row.update(metric="r2", score=score, low=low, high=high, majority=0.0)
            else:
                score, low, high = _score_ci(_accuracy, y_test, pred, n_boot, seed)
                values, counts = np.unique(y_train, return_counts=True)
                majority = float(np.mean(y_test == values[counts.argmax()]))
                row.update(metric="accuracy", score=score, low=low, high=high, majority=majority)
            # thousands of token dimensions: lbfgs may stop at its iteration cap; say so rather than print it
            converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            row.update(n_train=len(y_train), n_test=len(y_test), converged=converged)
            rows.append(row)
    return pd.DataFrame(rows)


def load_space(encoder_dir: str, dataset: WorldDataset, cache_dir: str = "runs/cache"):
    """The model-input space of any encoder folder (our ViT, a SigLIP folder, our VQ-VAE), features cached."""
    cfg_path = Path(encoder_dir) / "config.json"
    if not cfg_path.is_file():
        raise UnilensError(f"no config.json in {encoder_dir}: not an encoder folder (give a semantic or VQ encoder)")
    kind = json.loads(cfg_path.read_text()).get("kind")
    encoder = load_vq(encoder_dir) if kind == "vq" else load_semantic(encoder_dir)
    if encoder.image_size != dataset.image_size:
        raise UnilensError(
            f"{encoder_dir} takes {encoder.image_size} px images but {dataset.folder} has {dataset.image_size} px: "
            "probe it on a dataset made at its size"
        )
    return build_space(encoder, encoder_dir, dataset, cache_dir)
