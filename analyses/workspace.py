"""What the notebooks work on: the embedded default and its trained runs, or the same pipeline at smoke size.

Full mode reads `runs/` as the README's commands leave it (embedded artefacts, the four probe-set models, the
weather-transfer models) and names the command that makes anything missing. Smoke mode (UNILENS_SMOKE=1, or
`workspace(smoke=True)`) builds toy-size artefacts and trains toy runs of the same configs in seconds, so every
notebook runs top to bottom in CI.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from models.embedded import build_embedded, tiny_embedded
from models.presets import FreezeConfig
from models.train import TrainConfig, Trainer
from models.unified import ModelConfig
from tasks.dataset import make_dataset
from tasks.splits import ArmConfig
from unilens.errors import UnilensError

ARMS = ("mixed", "und-only")
PRESETS = ("lora", "adapters")


@dataclass
class Workspace:
    smoke: bool
    root: Path
    embedded: Path
    transfer_data: Path
    probe_runs: dict[str, Path] = field(default_factory=dict)  # "mixed+lora" -> run folder
    transfer_runs: dict[str, Path] = field(default_factory=dict)
    results: Path = Path("runs")  # where CLI result folders (probes, patching, transfer reports) live
    missing: dict[str, list[str]] = field(default_factory=dict)  # part -> commands that would make it

    @property
    def data(self) -> Path:
        return self.embedded / "data"

    def require(self, *parts: str) -> None:
        """Fail with the commands to run when a part a notebook needs is missing ("embedded", "transfer_data",
        "transfer_lora", "probe_set", "transfer")."""
        commands = [c for part in parts for c in self.missing.get(part, [])]
        if commands:
            raise UnilensError("this needs runs that do not exist yet; run:\n  " + "\n  ".join(commands))


def _names() -> list[tuple[str, str, str]]:
    return [(f"{arm}+{preset}", arm, preset) for preset in PRESETS for arm in ARMS]


def workspace(smoke: bool | None = None, root: str | Path | None = None) -> Workspace:
    if smoke is None:
        smoke = os.environ.get("UNILENS_SMOKE") == "1" or not Path("runs/embedded/lm").is_dir()
    return _smoke(Path(root or os.environ.get("UNILENS_SMOKE_DIR", "runs/smoke"))) if smoke else _full()


def battery_cells(root: Path = Path("runs/battery")) -> dict[str, Path]:
    """Finished battery cells by name (e.g. "weather.sem-sem.mixed.lora.s0"), over every battery under `root`."""
    cells = {}
    for status in sorted(root.glob("*/cells/*/cell.json")):
        info = json.loads(status.read_text())
        if info.get("status") == "done":
            cells.setdefault(info["name"].split("/")[-1], status.parent)
    return cells


def _full() -> Workspace:
    ws = Workspace(False, Path("runs"), Path("runs/embedded"), Path("runs/data/weather_transfer"))
    ws.probe_runs = {n: Path(f"runs/probe_set/sem-sem-{a}-{p}") for n, a, p in _names()}
    cells = battery_cells()
    for n, a, p in _names():  # a standalone run, else the same model from a battery (the README's main job)
        run = Path(f"runs/transfer/weather-sem-sem-{a}-{p}")
        cell = cells.get(f"weather.sem-sem.{a}.{p}.s0")
        ws.transfer_runs[n] = cell if cell is not None and not (run / "summary.json").is_file() else run
    make_split = "unilens data make configs/data/weather_transfer.yaml --out runs/data/weather_transfer"
    quick = "unilens battery run configs/battery/quick.yaml  # trains the four weather-split models"
    needs = {
        "embedded": {ws.embedded / "lm": "unilens embedded build configs/embedded.yaml"},
        "probe_set": {r: f"unilens train configs/train/probe_set/{r.name}.yaml" for r in ws.probe_runs.values()},
        "transfer_data": {ws.transfer_data: make_split},
        "transfer_lora": {
            ws.transfer_data: make_split,
            **{r: quick for n, r in ws.transfer_runs.items() if n.endswith("+lora")},
        },
        "transfer": {ws.transfer_data: make_split, **{r: quick for r in ws.transfer_runs.values()}},
    }
    for part, paths in needs.items():
        missing = list(dict.fromkeys(cmd for path, cmd in paths.items() if not path.exists()))
        if missing:
            ws.missing[part] = missing
    return ws


def _smoke(root: Path) -> Workspace:
    emb = root / "embedded"
    ecfg = tiny_embedded(emb)
    if not (emb / "lm").is_dir():
        build_embedded(ecfg, progress=False, log=lambda *_: None)
    transfer = root / "weather_transfer"
    if not transfer.is_dir():
        make_dataset(
            replace(
                ecfg.data,
                share_images=False,
                und_frequencies={"weather": {"sunny": 1.0, "cloudy": 0.0, "raining": 0.0}},
                n_test_images=24,
            ),
            transfer,
            progress=False,
        )
    ws = Workspace(True, root, emb, transfer, results=root / "results")
    for names, data, target in ((ws.probe_runs, emb / "data", "probe_set"), (ws.transfer_runs, transfer, "transfer")):
        for name, arm, preset in _names():
            out = root / target / f"sem-sem-{arm}-{preset}"
            names[name] = out
            if not (out / "summary.json").is_file():
                Trainer(_tiny_config(emb, data, out, arm, preset), progress=False).train()
    return ws


def _tiny_config(emb: Path, data: Path, out: Path, arm: str, preset: str) -> TrainConfig:
    model = ModelConfig(
        variant="sem-sem", llm=str(emb / "lm"), semantic_encoder=str(emb / "semantic"), vq_encoder=str(emb / "vq")
    )
    return TrainConfig(
        dataset=str(data),
        out=str(out),
        arm=ArmConfig(mixture=arm),
        model=model,
        freeze=FreezeConfig(preset=preset),
        epochs=1.0,
        batch_size=8,
        lr_adapters=3e-3,
        lr_llm=3e-3,
        checkpoint_fractions=[1.0],
        cache_dir=str(emb.parent / "cache"),
    )
