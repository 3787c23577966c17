"""Where is a corner's row read, and where its column? `unilens patch` results split by what a pair changes.

A corner pair (probes/pairs.py) moves the icon to another free corner: the row changes (the answers part at their
first token, "top" vs "bottom") or only the column does (they share "top-" and part at "left" vs "right"). The two
are different read-outs, and models on semantic input read only rows (docs/results/2026-12-02, eighth part), so the
pooled patching effect mixes them. `unilens patch` now tags every pair with its change (`probes.pairs.pair_change`)
and writes `patching_by_change.csv`; for results written before, this script rebuilds each pair's watches exactly
as `build_pairs` draws them (same test watches, same seed) and summarises them with the same function
(`analyses.patch_layers.summarize_effects`: ratio of mean differences, 95% bootstrap CI over pairs).

    python docs/results/2026-12-02/alignment/patch_split.py PATCH_DIR DATASET_DIR [--seed 0] [--mode denoise]

Writes PATCH_DIR/patching_by_change.csv (the library's table, when missing) and PATCH_DIR/patching_by_change.png
(layer on x, one panel per attribute x change and group, one line per model; models whose answers do not tell the
pairs apart, `separates` false, are not drawn).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analyses.patch_layers import summarize_effects
from probes.pairs import counterfactual, pair_change
from tasks.records import load_dataset
from tasks.world import Watch

KEYS = ["model", "attribute", "mode", "site", "site_kind", "layer", "group", "change"]  # as `unilens patch` writes


def pair_changes(dataset_dir: str, attribute: str, n_pairs: int, seed: int) -> list[str]:
    """What each pair `build_pairs` makes from the first `n_pairs` test watches changes."""
    dataset = load_dataset(dataset_dir)
    watches = list({r["image"]: Watch.from_dict(r["watch"]) for r in dataset.test}.values())[:n_pairs]
    rng = np.random.default_rng(seed)
    return [pair_change(w, counterfactual(w, attribute, rng), attribute) for w in watches]


def by_change(folder: Path, dataset_dir: str, seed: int) -> pd.DataFrame:
    """The library's per-change summary, computed here for results written before it existed."""
    if (folder / "patching_by_change.csv").is_file():
        return pd.read_csv(folder / "patching_by_change.csv")
    per_example = pd.read_csv(folder / "patching.csv")
    n_pairs = int(per_example["example"].max()) + 1
    change_of = {a: pair_changes(dataset_dir, a, n_pairs, seed) for a in per_example["attribute"].unique()}
    per_example["change"] = [
        change_of[a][e] for a, e in zip(per_example["attribute"], per_example["example"], strict=True)
    ]
    table = summarize_effects(per_example, KEYS, seed=seed)
    table.to_csv(folder / "patching_by_change.csv", index=False)
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("patch_dir")
    ap.add_argument("dataset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", default="denoise")
    args = ap.parse_args()
    folder = Path(args.patch_dir)
    table = by_change(folder, args.dataset, args.seed)
    table = table[(table["mode"] == args.mode) & table["change"].isin(["row", "column"])]

    panels = [(a, c) for a in ("weather_pos", "battery_pos") for c in ("row", "column")]
    groups = [g for g in ("image", "answer", "template", "question") if g in set(table["group"])]
    fig, axes = plt.subplots(len(groups), len(panels), figsize=(4.2 * len(panels), 3.2 * len(groups)), squeeze=False)
    for j, (attribute, change) in enumerate(panels):
        for i, group in enumerate(groups):
            ax = axes[i, j]
            d = table[(table["attribute"] == attribute) & (table["change"] == change) & (table["group"] == group)]
            for model, m in d.groupby("model"):
                m = m.sort_values("layer")
                n = int(m["n"].iloc[0])
                if not m["separates"].iloc[0]:  # the answers do not tell the pairs apart: effects are noise
                    ax.plot([], [], " ", label=f"{model}: no gap, not drawn")
                    continue
                ax.plot(
                    m["layer"], m["effect"], marker="o", label=f"{model} (gap {m['clean_minus_corrupt'].iloc[0]:.1f})"
                )
                ax.fill_between(m["layer"], m["lo"], m["hi"], alpha=0.15)
            ax.axhline(0, color="grey", ls="--", lw=1)
            ax.set_ylim(-0.3, 1.3)
            ax.set_title(f"{attribute}, {change} changes (n={n}): {group} positions", fontsize=9)
            ax.set_xlabel("block (-1: adapter output)")
            ax.legend(fontsize=6)
        axes[0, 0].set_ylabel("share of the answer restored")
    fig.suptitle(
        f"In which block does the answer stop reading the image? Patching ({args.mode}) by what the pair changes"
    )
    fig.tight_layout()
    fig.savefig(folder / "patching_by_change.png", dpi=100)
    plt.close(fig)
    pivot = table.pivot_table(index=["attribute", "change", "model"], columns=["group", "layer"], values="effect")
    print(pivot.round(2).to_string())


if __name__ == "__main__":
    main()
