"""`unilens battery run|status CONFIG`: an experiment grid declared once, run unattended, reported.

A battery crosses datasets x variants x mixtures x presets x seeds into training cells. Each cell's resolved
training config (output folder excluded) is hashed: the cell lives in `OUT/cells/<hash>`, so re-running skips
finished cells, resumes interrupted ones from their last checkpoint, and a changed config makes a new cell instead
of mixing results. A failed cell records its error in `cell.json` and the others go on. After the cells, the
battery runs the analyses it asks for over the finished cells (evaluation, probes, patching, transfer) and writes
one HTML report.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path

import pandas as pd

from analyses.attribute_layers import AttributeConfig, run_attributions
from analyses.encoder_inputs import encoders_of, run_encoder_probes
from analyses.mixing import MixingConfig, recipe, run_mixing
from analyses.patch_layers import PatchConfig, run_patching
from analyses.probe_layers import ProbeConfig, run_probes
from analyses.report import write_report
from analyses.transfer import TransferConfig, run_transfer
from models.checkpoint import without_later_defaults
from models.evaluate import EvalConfig, run_eval
from models.presets import parse_preset
from models.train import TrainConfig, Trainer
from models.unified import ModelConfig
from tasks.dataset import DataConfig, make_dataset
from tasks.splits import parse_arm
from unilens.config import from_dict, load_config, to_dict
from unilens.errors import UnilensError
from unilens.io import atomic_write_json, sha256_json


@dataclass
class DatasetEntry:
    path: str
    config: str = ""  # a data config to render the dataset from when `path` does not exist yet


@dataclass
class BatteryConfig:
    out: str = "runs/battery/default"
    embedded: str = "runs/embedded"  # lm/, semantic/, vq/ (and data/, the default dataset)
    datasets: dict[str, DatasetEntry] = field(default_factory=dict)  # name -> dataset; empty: the embedded data
    variants: list[str] = field(default_factory=lambda: ["sem-sem"])
    mixtures: list[str] = field(default_factory=lambda: ["mixed", "und-only"])
    presets: list[str] = field(default_factory=lambda: ["lora"])  # adapters, lora, full, lora-layers:0-2 ...
    # affine distortion strengths (finding 2): each entry {input: s, output: s}; [] means none
    distortions: list[dict] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    train: dict = field(default_factory=dict)  # TrainConfig fields shared by every cell (epochs, lr, batch size...)
    model: dict = field(default_factory=dict)  # ModelConfig fields shared by every cell (e.g. image_positions: true)
    evaluate: bool = True
    eval_limit: int = 0
    eval_checkpoints: str = "last"  # last | all: "all" gives the checkpoint series (gain against data seen)
    eval_generation: bool = False  # also generate and read back (needed by mixing for the generation task)
    mixing: bool = False  # findings 1-2: mixed vs single-task gains over the evaluated cells of each dataset
    probes: bool = False
    encoder_probes: bool = True  # what the input spaces carry, so a null result can be told from blindness
    probe_dataset: str = ""  # which dataset's cells to probe and patch (default: the first)
    probe_limit: int = 0  # probe only the first N test images (0: all); probes cost minutes per model on a CPU
    patching: bool = False
    patch_pairs: int = 32
    attributions: bool = False  # layer integrated gradients per block and position group, IG heatmaps
    attribution_attributes: list[str] = field(default_factory=lambda: ["weather", "weather_pos"])
    transfer: dict[str, dict] = field(default_factory=dict)  # dataset name -> {attribute, held_out}
    # sub-grids, each a question of its own: an entry overrides any of GRID_AXES (datasets as a list of names;
    # train merged over the top-level train). Empty: one grid from the top-level axes. Cells shared by two grids
    # (same resolved config) run once.
    grids: list[dict] = field(default_factory=list)


GRID_AXES = (
    "name",
    "datasets",
    "variants",
    "distortions",
    "mixtures",
    "presets",
    "seeds",
    "train",
    "model",
    "eval_checkpoints",
    "eval_generation",
)


@dataclass
class Cell:
    name: str
    dataset: str
    config: TrainConfig
    key: str
    distortion: str = ""  # "", ".din0.5", ".din0.5.dout0.5": cells compared in one transfer analysis share it
    grid: str = ""
    eval_checkpoints: str = "last"
    eval_generation: bool = False

    @property
    def folder(self) -> Path:
        return Path(self.config.out)


def load_battery(path: str | Path) -> BatteryConfig:
    raw = load_config(BatteryConfig, path)
    raw.datasets = {
        k: v if isinstance(v, DatasetEntry) else from_dict(DatasetEntry, v, f"datasets.{k}")
        for k, v in raw.datasets.items()
    }
    return raw


def cells_of(cfg: BatteryConfig) -> list[Cell]:
    """Every cell of every grid, each once, in grid order."""
    cells: dict[str, Cell] = {}
    for grid in cfg.grids or [{}]:
        for cell in _grid_cells(cfg, grid):
            cells.setdefault(cell.key, cell)
    return list(cells.values())


def _grid_cells(cfg: BatteryConfig, grid: dict) -> list[Cell]:
    unknown = set(grid) - set(GRID_AXES)
    if unknown:
        raise UnilensError(f"grid entries take {list(GRID_AXES)}, not {sorted(unknown)}")
    emb = Path(cfg.embedded)
    all_datasets = cfg.datasets or {"default": DatasetEntry(str(emb / "data"))}
    names = grid.get("datasets", list(all_datasets))
    missing = [n for n in names if n not in all_datasets]
    if missing:
        raise UnilensError(f"grid '{grid.get('name', '')}' uses datasets {missing}; declare them under datasets:")
    datasets = {n: all_datasets[n] for n in names}
    distortions = [_distortion(d) for d in grid.get("distortions", cfg.distortions)] or [(0.0, 0.0)]
    train = {**cfg.train, **grid.get("train", {})}
    model_fields = {**cfg.model, **grid.get("model", {})}
    fixed = {"variant", "llm", "semantic_encoder", "vq_encoder", "input_distortion", "output_distortion"}
    if fixed & set(model_fields):
        raise UnilensError(
            f"battery model fields {sorted(fixed & set(model_fields))} are set by the grid itself: use variants, "
            "distortions and embedded instead"
        )
    cells = []
    # mixtures innermost: a battery cut short still leaves complete mixed/und-only pairs
    for (dname, entry), variant, (d_in, d_out), spec, seed, mixture in product(
        datasets.items(),
        grid.get("variants", cfg.variants),
        distortions,
        grid.get("presets", cfg.presets),
        grid.get("seeds", cfg.seeds),
        grid.get("mixtures", cfg.mixtures),
    ):
        model = from_dict(
            ModelConfig,
            {
                **model_fields,
                "variant": variant,
                "llm": str(emb / "lm"),
                "semantic_encoder": str(emb / "semantic"),
                "vq_encoder": str(emb / "vq"),
                "input_distortion": d_in,
                "output_distortion": d_out,
            },
            "battery model",
        )
        base = from_dict(TrainConfig, train, "battery train")
        preset, layers = parse_preset(spec)
        tc = replace(
            base,
            dataset=entry.path,
            model=model,
            arm=parse_arm(mixture),
            freeze=replace(base.freeze, preset=preset, lora_layers=layers),
            seed=seed,
            out="",
        )
        resolved = without_later_defaults(to_dict(tc))
        resolved.pop("out")
        key = sha256_json(resolved)[:12]
        distorted = f".din{d_in:g}" * (d_in != 0) + f".dout{d_out:g}" * (d_out != 0)
        grid_name = grid.get("name", "")
        name = f"{grid_name}/" * bool(grid_name) + f"{dname}.{variant}{distorted}.{mixture}.{spec}.s{seed}"
        tc.out = str(Path(cfg.out) / "cells" / key)
        cells.append(
            Cell(
                name,
                dname,
                tc,
                key,
                distorted,
                grid_name,
                str(grid.get("eval_checkpoints", cfg.eval_checkpoints)),
                bool(grid.get("eval_generation", cfg.eval_generation)),
            )
        )
    return cells


def _distortion(entry: dict) -> tuple[float, float]:
    unknown = set(entry) - {"input", "output"}
    if unknown:
        raise UnilensError(f"distortions entries take input and output strengths, not {sorted(unknown)}")
    strengths = float(entry.get("input", 0.0)), float(entry.get("output", 0.0))
    if not all(0 <= s < 1 for s in strengths):
        # checked here, not when the cell builds its model: a bad strength must fail before hours of other cells
        raise UnilensError(
            f"distortion strengths must be in [0, 1) (at 1 an axis can be scaled to zero and the map is no longer "
            f"invertible), got {entry}; use e.g. 0.9 for the strongest"
        )
    return strengths


def _status(cell: Cell) -> dict:
    path = cell.folder / "cell.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {"status": "running" if (cell.folder / "config.yaml").is_file() else "pending"}


def _mark(cell: Cell, **info) -> None:
    cell.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cell.folder / "cell.json", {"name": cell.name, "key": cell.key, **info})


def status_table(cfg: BatteryConfig) -> pd.DataFrame:
    rows = []
    for cell in cells_of(cfg):
        st = _status(cell)
        ckpts = sorted((cell.folder / "checkpoints").glob("step-*")) if (cell.folder / "checkpoints").is_dir() else []
        rows.append(
            {
                "cell": cell.name,
                "key": cell.key,
                "status": st["status"],
                "checkpoint": ckpts[-1].name if ckpts else "",
                "error": st.get("error", ""),
            }
        )
    return pd.DataFrame(rows)


def _datasets(cfg: BatteryConfig, log) -> None:
    for name, entry in cfg.datasets.items():
        if Path(entry.path).is_dir():
            continue
        if not entry.config:
            raise UnilensError(f"dataset '{name}' not found at {entry.path} and no `config:` to render it from")
        log(f"[battery] rendering dataset {name} -> {entry.path}")
        Path(entry.path).parent.mkdir(parents=True, exist_ok=True)  # e.g. runs/data on a fresh clone
        make_dataset(load_config(DataConfig, entry.config), entry.path, progress=False)


def parse_shard(text: str) -> tuple[int, int]:
    """ "2/4" -> (2, 4): this worker trains cells 2, 6, 10, ... of 4 workers."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise UnilensError(f"--shard takes INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4, not '{text}'")
    return index, count


def run_battery(cfg: BatteryConfig, log=print, shard: tuple[int, int] | None = None) -> pd.DataFrame:
    """Train (or resume) every cell, then run the analyses over the finished ones and write the report. With
    `shard` (index, count) only every count-th cell from index trains and the analyses are left to a final
    unsharded run: one worker per GPU or machine over a shared folder, since a cell's folder is its only state."""
    _datasets(cfg, log)
    cells = cells_of(cfg)
    for i, cell in enumerate(cells):
        if shard and i % shard[1] != shard[0]:
            continue
        st = _status(cell)
        if st["status"] == "done":
            log(f"[battery] {i + 1}/{len(cells)} {cell.name}: done, skipped")
            continue
        verb = "training" if st["status"] == "pending" else "resuming"
        log(f"[battery] {i + 1}/{len(cells)} {cell.name} ({cell.key}): {verb}")
        try:
            Trainer(cell.config, progress=False).train()
            if cfg.evaluate:
                reader = Path(cfg.embedded) / "reader"
                run_eval(
                    cell.folder,
                    cell.folder / "eval",
                    EvalConfig(limit=cfg.eval_limit, captions=False, generation=cell.eval_generation),
                    str(reader) if cell.eval_generation and reader.is_dir() else None,
                    which=cell.eval_checkpoints,
                    log=lambda *_: None,
                )
            _mark(cell, status="done")
        except Exception as exc:  # one failed cell must not stop the battery
            _mark(cell, status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            log(f"[battery] {cell.name} failed: {type(exc).__name__}: {exc}")
    if shard:
        log(f"[battery] shard {shard[0]}/{shard[1]} finished; run without --shard for the analyses and report")
        return status_table(cfg)
    done = [c for c in cells if _status(c)["status"] == "done"]
    folders = _analyses(cfg, done, log)
    if folders:
        write_report(folders, Path(cfg.out) / "report.html", title=f"unilens battery {Path(cfg.out).name}")
        log(f"[battery] report: {Path(cfg.out) / 'report.html'}")
    return status_table(cfg)


def _analyses(cfg: BatteryConfig, done: list[Cell], log) -> list[Path]:
    out, folders = Path(cfg.out), []
    if cfg.evaluate:
        folders += [c.folder for c in done]
    datasets = list(cfg.datasets) or ["default"]
    probe_ds = cfg.probe_dataset or datasets[0]
    probe_done = [c for c in done if c.dataset == probe_ds]
    probe_cells = {c.name: str(c.folder) for c in probe_done}
    if cfg.encoder_probes and probe_done:
        folder = out / "encoders"
        first = probe_done[0].config
        run_encoder_probes(encoders_of([c.config for c in probe_done]), first.dataset, folder, first.cache_dir, log=log)
        folders.append(folder)
    if cfg.probes and probe_cells:
        folder = out / "probes"
        seeds = [0, 1, 2] if len(cfg.seeds) == 1 else [0]
        run_probes(ProbeConfig(models=probe_cells, out=str(folder), seeds=seeds, limit=cfg.probe_limit), log=log)
        folders.append(folder)
    if cfg.patching and probe_cells:
        folder = out / "patching"
        run_patching(
            PatchConfig(models=probe_cells, out=str(folder), n_pairs=cfg.patch_pairs, site_kinds=["resid_post"]),
            log=log,
        )
        folders.append(folder)
    if cfg.attributions and probe_cells:
        folder = out / "attributions"
        run_attributions(
            AttributeConfig(
                models=probe_cells,
                out=str(folder),
                attributes=list(cfg.attribution_attributes),
                ig_heatmaps=not cfg.patching,  # patching above drew them for every patchable attribute
            ),
            log=log,
        )
        folders.append(folder)
    if cfg.mixing:
        for dname in datasets:
            # one analysis per training recipe: grids on one dataset may train differently (see mixing.recipe)
            by_recipe: dict[str, list[Cell]] = {}
            for c in done:
                if c.dataset == dname:
                    by_recipe.setdefault(recipe(to_dict(c.config)), []).append(c)
            for i, group in enumerate(by_recipe.values()):
                if len({c.config.arm.mixture for c in group}) < 2:  # no pair to compare
                    continue
                folder = out / (f"mixing_{dname}" + f"_recipe{i + 1}" * (len(by_recipe) > 1))
                run_mixing(MixingConfig(models={c.name: str(c.folder) for c in group}, out=str(folder)), log=log)
                folders.append(folder)
    for dname, spec in cfg.transfer.items():
        # one analysis per dataset, distortion and grid: differences pair arms of otherwise identical cells
        groups: dict[tuple[str, str], list[Cell]] = {}
        for c in done:
            if c.dataset == dname:
                groups.setdefault((c.grid, c.distortion), []).append(c)
        for (grid, distortion), group in groups.items():
            models = {c.name: str(c.folder) for c in group}
            pairs = []
            for c in group:
                twin = c.name.replace(".mixed.", ".und-only.")
                if c.config.arm.mixture == "mixed" and twin in models:
                    pairs.append({"donor": c.name, "recipient": twin})
            folder = out / (f"transfer_{dname}" + f"_{grid}" * bool(grid) + distortion.replace(".", "_"))
            run_transfer(TransferConfig(models=models, out=str(folder), cross_model=pairs, **spec), log=log)
            folders.append(folder)
    return folders
