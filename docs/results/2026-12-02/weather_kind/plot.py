"""One figure from where_lost.py's CSVs: the weather's kind read by linear probes per layer, at the icon's tokens and at
the answer position, one colour per checkpoint, the model's own answer as a dotted line, the majority baseline grey.

    python docs/results/2026-12-02/weather_kind/plot.py OUT.png NAME=CSV [NAME=CSV ...]
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd


def site_order(site: str) -> int:
    return {"codes": -2, "adapter": -1}.get(site, int(site.split(".")[1]) if site.startswith("blocks.") else 99)


def layer_axis(ax, sites) -> None:
    """Layer on the x axis: the input codes, the adapter's output, then each block."""
    ticks = sorted({site_order(s) for s in sites})
    ax.set_xticks(ticks, ["codes" if t == -2 else "adapter" if t == -1 else str(t) for t in ticks])
    ax.set_xlabel("layer (block whose output is probed)")


def main() -> None:
    out, pairs = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for (name, path), colour in zip(pairs, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False):
        table = pd.read_csv(path)
        for ax, where in zip(axes, ("icon", "answer"), strict=True):
            part = table[table["where"] == where].copy()
            part["x"] = part["site"].map(site_order)
            part = part.sort_values("x")
            ax.plot(part["x"], part["probe_test_accuracy"], marker="o", color=colour, label=f"{name}: probe")
            ax.fill_between(part["x"], part["low"], part["high"], color=colour, alpha=0.15)
            ax.axhline(table["model_test_accuracy"].iloc[0], color=colour, linestyle=":", label=f"{name}: model")
    for ax, where in zip(axes, ("icon", "answer"), strict=True):
        ax.axhline(table["majority"].iloc[0], color="grey", linestyle="--", label="majority baseline")
        layer_axis(ax, table[table["where"] == where]["site"])
        ax.set_title({"icon": "at the icon's 2 x 2 tokens", "answer": "at the answer position"}[where])
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("weather read on 200 test images (95% CI)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Is the weather's kind held at the icon but not carried to the answer?")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
