"""`unilens patch CONFIG`: layer x position-group activation patching on counterfactual image pairs, per model.

For each model and attribute: pairs of test watches re-rendered with that attribute changed, a sweep over
(site, group) cells in both directions, a tidy per-example table and a summary whose effect is the ratio of mean
differences (patched - start) / (end - start) with a bootstrap CI over pairs. A model whose clean and corrupt
answers do not differ (the CI of clean - corrupt includes 0) gets `separates = False`: its normalised effects are
noise and the plot says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analyses.plots import plot_attribution_check, plot_ig_overlay, plot_patching, plot_patching_heatmap
from models.build import load_checkpoint
from models.evaluate import last_checkpoints
from models.presets import manifest_preset
from probes.attribution import attribution_patching, integrated_gradients
from probes.hooks import HookedVLM
from probes.pairs import DEFAULT_PAIR_ATTRIBUTES, PATCHABLE, build_pairs, pair_change
from probes.patching import Cell, patch_sweep
from tasks.records import load_dataset
from tasks.render import render_array
from tasks.splits import arm_label
from tasks.world import Watch
from unilens.errors import UnilensError
from unilens.io import atomic_write_text

SITE_KINDS = ("resid_post", "attn_out", "mlp_out")
EMBED_SITE = "blocks.0.hook_resid_pre"


@dataclass
class PatchConfig:
    models: dict[str, str] = field(default_factory=dict)  # name -> run or checkpoint folder
    out: str = "runs/patching"
    attributes: list[str] = field(default_factory=lambda: list(DEFAULT_PAIR_ATTRIBUTES))
    n_pairs: int = 64
    groups: list[str] = field(default_factory=lambda: ["image", "question", "template"])
    site_kinds: list[str] = field(default_factory=lambda: list(SITE_KINDS))
    modes: list[str] = field(default_factory=lambda: ["denoise", "noise"])
    seed: int = 0
    batch_cells: int = 8  # cells patched in one forward pass
    n_boot: int = 1000
    min_gap: float = 0.1  # smallest clean - corrupt logit difference whose normalised effects are reported


def cells_for(n_layers: int, kinds: list[str], groups: list[str]) -> list[Cell]:
    unknown = set(kinds) - set(SITE_KINDS)
    if unknown:
        raise UnilensError(f"unknown site kinds {sorted(unknown)}; choose from {list(SITE_KINDS)}")
    # the embeddings at image positions are the input adapter's output: the paper's site, as layer "adapter"
    cells = [Cell(EMBED_SITE, "image")] if "image" in groups else []
    for layer in range(n_layers):
        for kind in kinds:
            cells += [Cell(f"blocks.{layer}.hook_{kind}", g) for g in groups]
    return cells


def site_layer(site: str) -> tuple[str, int]:
    """("resid_post", 3) for blocks.3.hook_resid_post; ("adapter", -1) for the embeddings (the adapter output)."""
    if site == EMBED_SITE or not site.startswith("blocks."):
        return "adapter", -1
    _, layer, hook = site.split(".")
    return hook.removeprefix("hook_"), int(layer)


def summarize_effects(
    df: pd.DataFrame, keys: list[str], n_boot: int = 1000, seed: int = 0, min_gap: float = 0.1
) -> pd.DataFrame:
    """Ratio-of-means effect per cell with a bootstrap CI over pairs, and whether clean and corrupt differ: the
    CI of their logit-difference gap excludes 0 and the gap is at least `min_gap` (a ratio over a smaller gap
    amplifies noise into effects of any size)."""
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in df.groupby(keys, sort=True):
        start_col, end_col = ("corrupt", "clean") if g["mode"].iloc[0] == "denoise" else ("clean", "corrupt")
        patched, start, end = (g[c].to_numpy() for c in ("patched", start_col, end_col))
        idx = rng.integers(0, len(g), (n_boot, len(g)))
        gap = end - start
        # where clean and corrupt give the same logit difference (a model that cannot tell them apart), there is
        # no effect to measure: the ratio is inf or NaN, without a warning, and the cell does not separate
        with np.errstate(divide="ignore", invalid="ignore"):
            boots = (patched[idx] - start[idx]).mean(1) / gap[idx].mean(1)
            effect = float((patched - start).mean() / gap.mean())
            lo, hi = (float(np.quantile(boots, q)) for q in (0.025, 0.975))
        sep = (g["clean"] - g["corrupt"]).to_numpy()
        sep_boot = sep[idx].mean(1)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "effect": effect,
                "lo": lo,
                "hi": hi,
                "clean_minus_corrupt": float(sep.mean()),
                "separates": bool(np.quantile(sep_boot, 0.025) > 0 and sep.mean() >= min_gap),
                "n": len(g),
            }
        )
    return pd.DataFrame(rows)


def ig_overlays(model, pairs, clean, good, bad, image_size: int, out: Path, name: str, attribute: str) -> pd.DataFrame:
    """IG heatmaps over the image-token grid of the first clean examples, overlaid on their images; returns the
    convergence rows."""
    k = min(8, clean.ids.shape[0])
    sub = clean.head(k)
    attr, delta = integrated_gradients(model, sub, good[:k], bad[:k])
    images = np.stack([render_array(w, image_size) for w, _ in pairs.watches[:k]])
    safe = name.replace("+", "_").replace("/", "_")
    plot_ig_overlay(
        images,
        attr.cpu().numpy(),
        out / f"ig_{attribute}_{safe}.png",
        title=f"Which image tokens drive the '{attribute}' answer? ({name}, integrated gradients)",
    )
    return pd.DataFrame(
        {
            "model": name,
            "attribute": attribute,
            "example": range(k),
            "delta": delta.cpu().numpy(),
            "total": attr.sum(1).cpu().numpy(),
        }
    )


def patch_model(
    ckpt: Path, cfg: PatchConfig, name: str, log=print, ig_out: Path | None = None
) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Per-example patching effects of one model, and its IG convergence rows (IG figures go to `ig_out`)."""
    built, manifest = load_checkpoint(ckpt)
    dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
    image_size = int(dataset.manifest["config"]["image_size"])
    test_watches = list({r["image"]: Watch.from_dict(r["watch"]) for r in dataset.test}.values())
    watches = test_watches[: cfg.n_pairs]
    model = built.model.eval()
    device = next(model.parameters()).device
    cells = cells_for(HookedVLM(model).n_layers, cfg.site_kinds, cfg.groups)
    parts, ig_rows = [], []
    for attribute in cfg.attributes:
        pairs = build_pairs(built, watches, attribute, image_size, seed=cfg.seed)
        clean, corrupt = pairs.clean.to(device), pairs.corrupt.to(device)
        changes = {i: pair_change(a, b, attribute) for i, (a, b) in enumerate(pairs.watches)}
        good, bad = pairs.good.to(device), pairs.bad.to(device)
        for mode in cfg.modes:
            df = patch_sweep(model, clean, corrupt, good, bad, cells, mode=mode, batch_cells=cfg.batch_cells)
            df["change"] = df["example"].map(changes)
            if mode == "denoise":  # the gradient estimate of the same cells, for the estimated-vs-true check
                est = attribution_patching(model, clean, corrupt, good, bad, cells)
                df = df.merge(est[["site", "group", "example", "estimated_change"]], on=["site", "group", "example"])
            parts.append(df.assign(attribute=attribute))
        if ig_out is not None:
            ig_rows.append(ig_overlays(model, pairs, clean, good, bad, image_size, ig_out, name, attribute))
        log(f"[patch] {name} {attribute}: {len(watches)} pairs x {len(cells)} cells x {len(cfg.modes)} modes")
    out = pd.concat(parts, ignore_index=True)
    kinds_layers = out["site"].map(site_layer)
    out["site_kind"] = [k for k, _ in kinds_layers]
    out["layer"] = [lay for _, lay in kinds_layers]
    tags = {"variant": manifest["variant"], "preset": manifest_preset(manifest), "mixture": arm_label(manifest["arm"])}
    return out.assign(model=name, **tags, checkpoint=str(ckpt)), ig_rows


def pair_analysis_setup(models: dict, attributes: list[str], out: str, verb: str) -> tuple[Path, dict[str, Path]]:
    """Check an analysis over counterfactual pairs (patch, attribute): it names models, patchable attributes and
    trained checkpoints; only then make its output folder, so that a wrong path leaves nothing behind. Returns the
    folder and each model's checkpoint."""
    if not models:
        raise UnilensError(f"{verb} config lists no models: add `models: {{name: path/to/run_or_checkpoint}}`")
    bad = set(attributes) - set(PATCHABLE)
    if bad:
        raise UnilensError(f"cannot {verb} attributes {sorted(bad)}; patchable attributes: {list(PATCHABLE)}")
    ckpts = last_checkpoints(models)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return folder, ckpts


def run_patching(cfg: PatchConfig, log=print) -> dict[str, pd.DataFrame]:
    out, ckpts = pair_analysis_setup(cfg.models, cfg.attributes, cfg.out, "patch")
    parts, ig_rows = [], []
    for name, ckpt in ckpts.items():
        effects, ig = patch_model(ckpt, cfg, name, log, ig_out=out)
        parts.append(effects)
        ig_rows += ig
    per_example = pd.concat(parts, ignore_index=True)
    if ig_rows:
        atomic_write_text(out / "ig_convergence.csv", pd.concat(ig_rows, ignore_index=True).to_csv(index=False))
    keys = ["model", "attribute", "mode", "site", "site_kind", "layer", "group"]
    summary = summarize_effects(per_example, keys, cfg.n_boot, cfg.seed, cfg.min_gap)
    atomic_write_text(out / "patching.csv", per_example.to_csv(index=False))
    atomic_write_text(out / "patching_summary.csv", summary.to_csv(index=False))
    by_change = summarize_effects(per_example, [*keys, "change"], cfg.n_boot, cfg.seed, cfg.min_gap)
    atomic_write_text(out / "patching_by_change.csv", by_change.to_csv(index=False))
    for attribute in cfg.attributes:
        for mode in cfg.modes:
            # one line figure per patched site kind; resid_post keeps the plain name
            for kind in [k for k in SITE_KINDS if k in cfg.site_kinds]:
                suffix = "" if kind == "resid_post" else f"_{kind}"
                plot_patching(summary, attribute, mode, out / f"patching_{attribute}_{mode}{suffix}.png", kind=kind)
            plot_patching_heatmap(summary, attribute, mode, out / f"patching_heatmap_{attribute}_{mode}.png")
    if "estimated_change" in per_example:
        plot_attribution_check(per_example, out / "attribution_vs_true_patching.png")
    return {"patching": per_example, "summary": summary, "by_change": by_change}
