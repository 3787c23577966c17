"""One figure from where_time.py's CSVs: the hour and the minute read by linear probes per layer, from the image tokens
and at the positions that emit their digits, one colour per checkpoint, the majority baseline grey.

    python docs/results/2026-12-02/time_reading/plot.py OUT.png NAME=CSV [NAME=CSV ...] [--title T] [--where W ...]

--where keeps only those probe positions (image-all, image-mean, H1, H2, M1, M2), --targets only those panels (hour,
minute_bin); --title replaces the question.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "weather_kind"))
from plot import layer_axis, site_order

PANELS = [("hour", ("image-all", "image-mean", "H1", "H2")), ("minute_bin", ("image-all", "image-mean", "M1", "M2"))]
QUESTION = "Is the time held in the image tokens but never carried to the digits that answer?"
STYLES = {"image-all": "-", "image-mean": "--", "H1": ":", "H2": "-.", "M1": ":", "M2": "-."}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+", help="NAME=CSV")
    ap.add_argument("--title", default=QUESTION)
    ap.add_argument("--where", nargs="*", default=list(STYLES))
    ap.add_argument("--targets", nargs="*", default=[t for t, _ in PANELS])
    args = ap.parse_args()
    out, pairs = args.out, [a.split("=", 1) for a in args.runs]
    panels = [(t, w) for t, w in PANELS if t in args.targets]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 1, 4.6), sharey=True, squeeze=False)
    axes = list(axes[0])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, path), colour in zip(pairs, colours, strict=False):
        table = pd.read_csv(path)
        for ax, (target, wheres) in zip(axes, panels, strict=True):
            for where in (w for w in wheres if w in args.where):
                part = table[(table["where"] == where) & (table["target"] == target)].copy()
                part["x"] = part["site"].map(site_order)
                part = part.sort_values("x")
                ax.plot(
                    part["x"],
                    part["probe_test_accuracy"],
                    STYLES[where],
                    marker="o",
                    ms=3,
                    color=colour,
                    label=f"{name}: {where}",
                )
                ax.fill_between(part["x"], part["low"], part["high"], color=colour, alpha=0.1)
    for ax, (target, _) in zip(axes, panels, strict=True):
        majority = table[table["target"] == target]["majority"].iloc[0]
        ax.axhline(majority, color="grey", linestyle="--", label="majority baseline")
        layer_axis(ax, table["site"])
        ax.set_title({"hour": "the hour (mod 12)", "minute_bin": "the minute's five-minute bin"}[target])
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("read on 200 test images (95% CI)")
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    axes[-1].legend(entries.values(), entries.keys(), fontsize=6, loc="upper right")
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
