"""Draw `learning.png`: test accuracy on the hour against training samples seen, for the readers trained on the
semantic tokens (readout_semantic.csv, one dot per seed, the seeds' mean joined) and for the LLM trained on time
questions alone (the eval summaries here: greedy answers' hour with its 95% CI).

    python docs/results/2026-12-03/time_only/plot.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

HERE = Path(__file__).parent
READOUT_BATCH = 64
LLM_BATCH = 32


def main() -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    readout = pd.read_csv(HERE / "readout_semantic.csv")
    for color, (name, g) in zip(("C0", "C1", "C2", "C3"), readout.groupby("reader"), strict=False):
        ax.scatter(g["steps"] * READOUT_BATCH, g["test"], s=14, alpha=0.6, color=color)
        mean = g.groupby("steps")["test"].mean()
        ax.plot(
            mean.index * READOUT_BATCH, mean.values, color=color, marker="o", ms=3, label=f"semantic reader: {name}"
        )
    llm_colors = ("black", "C4", "C5", "C6", "C8")
    for color, path in zip(llm_colors, sorted(HERE.glob("[sv]*-*_summary.csv")), strict=True):
        s = pd.read_csv(path)
        s = s[(s["task"] == "vqa") & (s["attribute"] == "time") & (s["value"] == "all") & (s["metric"] == "hour")]
        s = s.sort_values("step")
        x = s["step"] * LLM_BATCH
        err = [s["mean"] - s["lo"], s["hi"] - s["mean"]]
        run = path.name[: -len("_summary.csv")]
        ax.errorbar(x, s["mean"], yerr=err, marker="s", capsize=3, color=color, label=f"LLM: {run}")
    ax.axhline(1 / 12, color="grey", linestyle="--", label="chance (1/12)")
    ax.set_xlabel("training samples seen (time questions / images)")
    ax.set_ylabel("hour, test (readers: 200 images; LLM: 88 time turns)")
    ax.set_ylim(0, 1)
    ax.set_title("Can the hour be learnt from the image tokens, and by which reader?")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(HERE / "learning.png", dpi=130)


if __name__ == "__main__":
    main()
