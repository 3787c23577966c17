"""`unilens attribute CONFIG`: where, layer by layer, does the evidence for an answer sit?

For each model and attribute, on clean test watches (the clean halves of the counterfactual pairs patching uses):
layer integrated gradients of the answer's logit difference (right value minus the counterfactual one) to every
LLM block's output, with the mean-image baseline. Per block, the share of f(input) - f(baseline) attributed to
each position group (image, question, template) as a ratio of means over examples with a bootstrap CI; a block's
shares sum to 1 up to the integration error, which is reported. Plus integrated-gradients heatmaps over the image
tokens, overlaid on the watches. A model whose answer barely depends on the image (mean |f(input) - f(baseline)|
below `min_total` in absolute value) gets `reads_image = False`: its shares divide noise by almost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analyses.patch_layers import ig_overlays, pair_analysis_setup
from analyses.plots import plot_layer_attributions
from models.build import load_checkpoint
from models.presets import manifest_preset
from probes.attribution import layer_integrated_gradients
from probes.pairs import DEFAULT_PAIR_ATTRIBUTES, build_pairs
from probes.patching import group_mask
from tasks.records import load_dataset
from tasks.splits import arm_label
from tasks.world import Watch
from unilens.io import atomic_write_text


@dataclass
class AttributeConfig:
    models: dict[str, str] = field(default_factory=dict)  # name -> run or checkpoint folder
    out: str = "runs/attribution"
    attributes: list[str] = field(default_factory=lambda: list(DEFAULT_PAIR_ATTRIBUTES))
    n_examples: int = 16
    n_steps: int = 16
    groups: list[str] = field(default_factory=lambda: ["image", "question", "template"])
    seed: int = 0
    n_boot: int = 1000
    min_total: float = 0.1
    # IG heatmaps over the image tokens; a battery that also patches turns them off here, since patching draws the
    # same heatmaps for every patchable attribute
    ig_heatmaps: bool = True


def attribute_model(ckpt: Path, cfg: AttributeConfig, name: str, out: Path, log=print):
    """Per example, block and group: attribution and the example's total; and the IG convergence rows."""
    built, manifest = load_checkpoint(ckpt)
    dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
    image_size = int(dataset.manifest["config"]["image_size"])
    watches = list({r["image"]: Watch.from_dict(r["watch"]) for r in dataset.test}.values())[: cfg.n_examples]
    model = built.model.eval()
    device = next(model.parameters()).device
    rows, ig_rows = [], []
    for attribute in cfg.attributes:
        pairs = build_pairs(built, watches, attribute, image_size, seed=cfg.seed)
        clean, good, bad = pairs.clean.to(device), pairs.good.to(device), pairs.bad.to(device)
        attr, total = layer_integrated_gradients(model, clean, good, bad, n_steps=cfg.n_steps)
        attr, total = attr.cpu().numpy(), total.cpu().numpy()
        for group in cfg.groups:
            mask = group_mask(clean, group).cpu().numpy()[:, None, :]
            in_group = (attr * mask).sum(-1)  # (B, n_layers)
            for example in range(attr.shape[0]):
                for layer in range(attr.shape[1]):
                    rows.append(
                        {
                            "attribute": attribute,
                            "example": example,
                            "layer": layer,
                            "group": group,
                            "attribution": float(in_group[example, layer]),
                            "total": float(total[example]),
                            "error": float(attr[example, layer].sum() - total[example]),
                        }
                    )
        if cfg.ig_heatmaps:
            ig_rows.append(ig_overlays(model, pairs, clean, good, bad, image_size, out, name, attribute))
        log(f"[attribute] {name} {attribute}: {attr.shape[0]} examples x {attr.shape[1]} blocks")
    tags = {"variant": manifest["variant"], "preset": manifest_preset(manifest), "mixture": arm_label(manifest["arm"])}
    return pd.DataFrame(rows).assign(model=name, **tags), ig_rows


def summarize_shares(df: pd.DataFrame, n_boot: int = 1000, seed: int = 0, min_total: float = 0.1) -> pd.DataFrame:
    """Share of the total per model x attribute x layer x group: ratio of means, bootstrap CI over examples."""
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in df.groupby(["model", "attribute", "layer", "group"], sort=True):
        part, total = g["attribution"].to_numpy(), g["total"].to_numpy()
        idx = rng.integers(0, len(g), (n_boot, len(g)))
        # a model blind to the image has a zero total: its share is undefined (NaN), flagged by reads_image below
        with np.errstate(divide="ignore", invalid="ignore"):
            boot = part[idx].mean(1) / total[idx].mean(1)
            share = part.mean() / total.mean()
        rows.append(
            {
                **dict(zip(["model", "attribute", "layer", "group"], key, strict=True)),
                "share": share,
                "lo": float(np.quantile(boot, 0.025)),
                "hi": float(np.quantile(boot, 0.975)),
                "mean_total": total.mean(),
                "max_relative_error": float(np.abs(g["error"]).max() / max(np.abs(total).mean(), 1e-9)),
                "reads_image": bool(abs(total.mean()) >= min_total),  # the ratio divides by this mean
                "n": len(g),
            }
        )
    return pd.DataFrame(rows)


def run_attributions(cfg: AttributeConfig, log=print) -> pd.DataFrame:
    out, ckpts = pair_analysis_setup(cfg.models, cfg.attributes, cfg.out, "attribute")
    parts, ig_rows = [], []
    for name, ckpt in ckpts.items():
        df, ig = attribute_model(ckpt, cfg, name, out, log)
        parts.append(df)
        ig_rows += ig
    per_example = pd.concat(parts, ignore_index=True)
    summary = summarize_shares(per_example, cfg.n_boot, cfg.seed, cfg.min_total)
    atomic_write_text(out / "layer_attributions.csv", per_example.to_csv(index=False))
    atomic_write_text(out / "layer_attributions_summary.csv", summary.to_csv(index=False))
    if ig_rows:
        atomic_write_text(out / "ig_convergence.csv", pd.concat(ig_rows, ignore_index=True).to_csv(index=False))
    for attribute in cfg.attributes:
        plot_layer_attributions(summary, attribute, out / f"layer_attribution_{attribute}.png")
    return summary
