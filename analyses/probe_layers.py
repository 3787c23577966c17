"""`unilens probe CONFIG`: layer-wise and cross-context probes for several trained models, as tidy CSVs and plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analyses.plots import plot_cross_context, plot_probe_layers, plot_selectivity
from models.build import build_spaces, load_checkpoint
from models.evaluate import checkpoints_of
from models.presets import manifest_preset
from models.sequence import Encoder
from probes.activations import collect
from probes.linear import cross_context, layerwise
from tasks.records import load_dataset
from tasks.splits import arm_label
from unilens.errors import UnilensError
from unilens.io import atomic_write_text

ATTRIBUTES = ["weather", "weather_pos", "battery_pos", "battery_decile"]


@dataclass
class ProbeConfig:
    models: dict[str, str] = field(default_factory=dict)  # name -> checkpoint or run folder (its last checkpoint)
    out: str = "runs/probes"
    attributes: list[str] = field(default_factory=lambda: list(ATTRIBUTES))
    where: str = "post"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    n_folds: int = 5
    limit: int = 0  # first N test images only (0: all)
    batch_size: int = 32
    store_activations: bool = False


def activation_sets(ckpt: Path, cfg: ProbeConfig, store: Path | None = None):
    built, manifest = load_checkpoint(ckpt)
    dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
    und_space, gen_space = build_spaces(built, built.model.cfg, dataset, manifest["config"]["cache_dir"])
    sets = {}
    for context, task in (("understand", "vqa"), ("generate", "generation")):
        records = [r for r in dataset.test if r["task"] == task]
        records = records[: cfg.limit] if cfg.limit else records
        enc = Encoder(built.tokenizer, (und_space if context == "understand" else gen_space).num_tokens)
        sets[context] = collect(
            built.model,
            records,
            und_space,
            gen_space,
            enc,
            context,
            where=cfg.where,
            batch_size=cfg.batch_size,
            store=store / context if store else None,
        )
    return sets, manifest


def run_probes(cfg: ProbeConfig, log=print) -> dict[str, pd.DataFrame]:
    if not cfg.models:
        raise UnilensError("probe config lists no models: add `models: {name: path/to/run_or_checkpoint}`")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    layer_rows, cross_rows = [], []
    for name, target in cfg.models.items():
        ckpt = checkpoints_of(target, "last")[0]
        store = out / "activations" / name if cfg.store_activations else None
        sets, manifest = activation_sets(ckpt, cfg, store)
        tags = {
            "variant": manifest["variant"],
            "preset": manifest_preset(manifest),
            "mixture": arm_label(manifest["arm"]),
            "checkpoint": str(ckpt),
        }
        for attribute in cfg.attributes:
            for acts in sets.values():
                layer_rows.append(layerwise(acts, attribute, cfg.seeds, cfg.n_folds, name).assign(**tags))
            for tr, te in (("generate", "understand"), ("understand", "generate")):
                cross_rows.append(cross_context(sets[tr], sets[te], attribute, cfg.seeds, name).assign(**tags))
        log(
            f"[probe] {name}: {len(sets['understand'].meta)} understanding and {len(sets['generate'].meta)} "
            "generation examples probed"
        )
    layers = pd.concat(layer_rows, ignore_index=True)
    cross = pd.concat(cross_rows, ignore_index=True)
    atomic_write_text(out / "probes.csv", layers.to_csv(index=False))
    atomic_write_text(out / "cross_context.csv", cross.to_csv(index=False))
    for attribute in cfg.attributes:
        for context in ("understand", "generate"):
            d = layers[layers["context"] == context]
            plot_probe_layers(
                d,
                attribute,
                out / f"probe_{attribute}_{context}.png",
                title=f"Where is '{attribute}' decodable ({context} context)?",
            )
        plot_cross_context(cross, attribute, out / f"cross_context_{attribute}.png")
    plot_selectivity(layers[layers["context"] == "understand"], out / "selectivity_understand.png")
    return {"probes": layers, "cross_context": cross}
