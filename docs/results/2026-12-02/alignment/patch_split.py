"""Where is a corner's row read, and where its column? `unilens patch` results split by what a pair changes.

A corner pair (probes/pairs.py) moves the icon to another free corner: the row changes (the answers part at their
first token, "top" vs "bottom") or only the column does (they share "top-" and part at "left" vs "right"). The two
are different read-outs, and models on semantic input read only rows (docs/results/2026-12-02, eighth part), so the
pooled patching effect mixes them. This script rebuilds each pair's watches exactly as `build_pairs` draws them
(same test watches, same seed) and summarises the effect per model x attribute x change x group x layer as the
ratio of mean differences (patched - corrupt) / (clean - corrupt), with a 95% bootstrap CI over pairs.

    python docs/results/2026-12-02/alignment/patch_split.py PATCH_DIR DATASET_DIR [--seed 0] [--mode denoise]

Writes PATCH_DIR/patching_by_change.csv and PATCH_DIR/patching_by_change.png (layer on x, one panel per
attribute x change and group, one line per model; models whose answer does not tell a pair apart are not drawn).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from probes.pairs import counterfactual
from tasks.records import load_dataset
from tasks.world import Watch


def pair_changes(dataset_dir: str, attribute: str, n_pairs: int, seed: int) -> list[str]:
    """'row' or 'column' for each pair `build_pairs` makes from the first `n_pairs` test watches."""
    dataset = load_dataset(dataset_dir)
    watches = list({r["image"]: Watch.from_dict(r["watch"]) for r in dataset.test}.values())[:n_pairs]
    rng = np.random.default_rng(seed)
    changes = []
    for w in watches:
        before, after = getattr(w, attribute), getattr(counterfactual(w, attribute, rng), attribute)
        changes.append("row" if before.split("-")[0] != after.split("-")[0] else "column")
    return changes


def ratio_ci(d: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    num, den = (d["patched"] - d["corrupt"]).to_numpy(), (d["clean"] - d["corrupt"]).to_numpy()
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = num[idx].mean(1) / den[idx].mean(1)
    return num.mean() / den.mean(), *np.percentile(boots, [2.5, 97.5])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("patch_dir")
    ap.add_argument("dataset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", default="denoise")
    ap.add_argument(
        "--min-gap", type=float, default=0.2, help="models whose mean clean - corrupt is smaller: not drawn"
    )
    args = ap.parse_args()
    folder = Path(args.patch_dir)
    per_example = pd.read_csv(folder / "patching.csv")
    per_example = per_example[per_example["mode"] == args.mode]
    corner = per_example[per_example["attribute"].isin(["weather_pos", "battery_pos"])].copy()
    n_pairs = int(corner["example"].max()) + 1
    change_of = {a: pair_changes(args.dataset, a, n_pairs, args.seed) for a in corner["attribute"].unique()}
    corner["change"] = [change_of[a][e] for a, e in zip(corner["attribute"], corner["example"], strict=True)]
    rows = []
    for key, d in corner.groupby(["model", "attribute", "change", "group", "layer"]):
        effect, lo, hi = ratio_ci(d)
        gap = (d["clean"] - d["corrupt"]).mean()
        rows.append(
            dict(
                zip(("model", "attribute", "change", "group", "layer"), key, strict=True),
                n=len(d),
                clean_minus_corrupt=gap,
                effect=effect,
                lo=lo,
                hi=hi,
            )
        )
    table = pd.DataFrame(rows)
    table.to_csv(folder / "patching_by_change.csv", index=False)

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
                if m["clean_minus_corrupt"].iloc[0] < args.min_gap:  # the answer does not tell the pair apart
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
