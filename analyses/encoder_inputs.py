"""Do the input spaces carry what the questions ask? Encoder probes over the encoders a set of runs used.

Run before reading a null result: a model that fails to answer about the weather is blind only if its input space
does not carry the weather. `encoder_probes.csv` and one figure land in the output folder; the report reads them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analyses.plots import POOL_LABELS, plot_encoder_probes
from models.build import encoder_dir
from probes.encoder import POOLS, encoder_probe, load_space
from tasks.records import load_dataset
from unilens.io import atomic_write_text


def encoders_of(runs: list) -> dict[str, str]:
    """Space name -> encoder folder, over training configs (`models.train.TrainConfig`), each space once."""
    found: dict[str, str] = {}
    for cfg in runs:
        for space in cfg.model.spaces:
            found.setdefault(space, encoder_dir(space, cfg.model))
    return found


def run_encoder_probes(
    encoders: dict[str, str],
    dataset: str,
    out: str | Path,
    cache_dir: str = "runs/cache",
    log=print,
    pools: tuple[str, ...] = POOLS,
) -> pd.DataFrame:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(dataset)
    tables = []
    for name, folder in sorted(encoders.items()):
        log(f"[encoders] probing {name} ({folder}) on {dataset}")
        tables.append(encoder_probe(load_space(folder, data, cache_dir), data, pools=pools, name=name))
    table = pd.concat(tables, ignore_index=True)
    atomic_write_text(out / "encoder_probes.csv", table.to_csv(index=False))
    plot_encoder_probes(table, out / "encoder_probes.png")
    return table


def answer_lines(table: pd.DataFrame) -> list[str]:
    """One line per encoder and attribute: the best pooling's score against the majority baseline."""
    lines = []
    for (name, attribute), g in table.groupby(["encoder", "attribute"], sort=True):
        r = g.loc[g["score"].idxmax()]
        base = f"majority {r.majority:.2f}" if r.metric == "accuracy" else "0 for no signal"
        lines.append(
            f"{name} input space, {attribute}: {r.metric} {r.score:.3f} [{r.low:.3f}, {r.high:.3f}] with "
            f"{POOL_LABELS.get(r['pool'], r['pool'])} ({base})"
            + ("" if r.get("converged", True) else "; solver capped, a lower bound")
        )
    return lines
