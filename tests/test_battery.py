"""Batteries: content-addressed cells that skip when done, isolate failures, and end in one report."""

import json

import pandas as pd
import yaml

from analyses.battery import cells_of, load_battery, run_battery, status_table
from unilens.cli import main


def _battery(tiny_embedded, tmp_path, **over):
    from dataclasses import replace

    from models.embedded import tiny_embedded as tiny_cfg
    from unilens.config import to_dict

    data = replace(
        tiny_cfg(tiny_embedded).data,
        share_images=False,
        und_frequencies={"weather": {"sunny": 1.0, "cloudy": 0.0, "raining": 0.0}},
        n_test_images=24,
    )
    (tmp_path / "weather.yaml").write_text(yaml.safe_dump(to_dict(data)))
    cfg = yaml.safe_load(open("configs/battery/smoke.yaml"))
    cfg.update(
        out=str(tmp_path / "battery"),
        embedded=str(tiny_embedded),
        datasets={
            "default": {"path": str(tiny_embedded / "data")},
            # under a folder that does not exist yet, as runs/data on a fresh clone
            "weather": {"path": str(tmp_path / "data" / "weather"), "config": str(tmp_path / "weather.yaml")},
        },
    )
    cfg["train"]["cache_dir"] = str(tmp_path / "cache")
    cfg.update(over)
    path = tmp_path / "battery.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_battery_runs_skips_isolates_failures_and_reports(tiny_embedded, tmp_path):
    path = _battery(tiny_embedded, tmp_path, variants=["sem-sem", "no-such-variant"])
    cfg = load_battery(path)
    lines = []
    table = run_battery(cfg, log=lines.append)
    assert len(table) == 8  # 2 datasets x 2 variants x 2 mixtures
    assert (table[table["cell"].str.contains("sem-sem")]["status"] == "done").all()
    failed = table[table["cell"].str.contains("no-such-variant")]
    assert (failed["status"] == "failed").all() and failed["error"].str.contains("unknown variant").all()
    report = (tmp_path / "battery" / "report.html").read_text()
    # 4 evaluated cells; encoder probes, layer probes, patching, attributions, mixing x 2, transfer
    assert report.count("<section>") == 4 + 7
    assert "Do the input spaces carry what the questions ask" in report
    encoders = pd.read_csv(tmp_path / "battery" / "encoders" / "encoder_probes.csv")
    assert set(encoders.encoder) == {"semantic"} and len(encoders) == 2 * 6  # sem-sem: one space, 2 poolings
    assert "mixed - und-only (sem-sem, lora)" in report
    # IG heatmaps are drawn once, by patching; the layer attributions leave them out
    assert list((tmp_path / "battery" / "patching").glob("ig_weather_*.png"))
    assert not list((tmp_path / "battery" / "attributions").glob("ig_*"))
    done = [c for c in cells_of(cfg) if "sem-sem" in c.name]
    stamps = {c.key: (c.folder / "summary.json").stat().st_mtime_ns for c in done}
    lines.clear()
    run_battery(cfg, log=lines.append)
    assert sum("done, skipped" in line for line in lines) == 4
    assert stamps == {c.key: (c.folder / "summary.json").stat().st_mtime_ns for c in done}
    cell = json.loads((done[0].folder / "cell.json").read_text())
    assert cell["status"] == "done" and cell["name"] == done[0].name


def test_cells_are_content_addressed(tiny_embedded, tmp_path):
    a = {c.name: c.key for c in cells_of(load_battery(_battery(tiny_embedded, tmp_path)))}
    changed = {"epochs": 2.0, "batch_size": 8, "checkpoint_fractions": [1.0], "cache_dir": str(tmp_path / "cache")}
    b = {c.name: c.key for c in cells_of(load_battery(_battery(tiny_embedded, tmp_path, train=changed)))}
    assert a.keys() == b.keys() and len(set(a.values())) == len(a)
    assert not set(a.values()) & set(b.values())  # a changed config never reuses a finished cell
    assert a == {c.name: c.key for c in cells_of(load_battery(_battery(tiny_embedded, tmp_path)))}


def test_battery_status_cli(tiny_embedded, tmp_path, capsys):
    path = _battery(tiny_embedded, tmp_path)
    assert main(["battery", "status", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("pending") == 4
    assert status_table(load_battery(path))["status"].eq("pending").all()


def test_grid_axes_lora_layers_and_distortions_make_distinct_cells(tiny_embedded, tmp_path):
    import pytest

    from unilens.errors import UnilensError

    path = _battery(
        tiny_embedded,
        tmp_path,
        mixtures=["mixed", "und-only:step-matched"],
        presets=["lora", "lora-layers:0-1", "lora-layers:1"],
        distortions=[{}, {"input": 0.5}],
    )
    cells = {c.name: c for c in cells_of(load_battery(path))}
    assert len({c.key for c in cells.values()}) == len(cells) == 2 * 3 * 2 * 2  # datasets x presets x dist. x arms
    control = cells["default.sem-sem.und-only:step-matched.lora.s0"].config.arm
    assert (control.mixture, control.step_matched) == ("und-only", True)
    ranged = cells["default.sem-sem.mixed.lora-layers:0-1.s0"].config
    assert (ranged.freeze.preset, ranged.freeze.lora_layers) == ("lora-layers", [0, 1])
    distorted = cells["default.sem-sem.din0.5.mixed.lora.s0"].config.model
    assert (distorted.input_distortion, distorted.output_distortion) == (0.5, 0.0)
    for bad in (["lora-layers"], ["lora:1"], ["lora-layers:a-b"]):
        with pytest.raises(UnilensError, match="lora-layers"):
            cells_of(load_battery(_battery(tiny_embedded, tmp_path, presets=bad)))
    for bad, message in ((["und-only:twice"], "step-matched"), (["mixed:step-matched"], "mixed is the reference")):
        with pytest.raises(UnilensError, match=message):
            cells_of(load_battery(_battery(tiny_embedded, tmp_path, mixtures=bad)))
    for bad in ([{"input": 1.0}], [{"output": -0.1}]):  # rejected when the grid resolves, not hours later
        with pytest.raises(UnilensError, match=r"in \[0, 1\)"):
            cells_of(load_battery(_battery(tiny_embedded, tmp_path, distortions=bad)))


def test_grids_union_their_cells_once_and_check_their_axes(tiny_embedded, tmp_path):
    import pytest

    from unilens.errors import UnilensError

    grids = [
        {"name": "f1", "datasets": ["default"], "presets": ["lora", "adapters"]},
        {"name": "f3", "datasets": ["default", "weather"], "presets": ["lora"], "train": {"epochs": 2.0}},
        {"name": "again", "datasets": ["default"], "presets": ["adapters"]},  # all its cells are f1's
    ]
    cells = cells_of(load_battery(_battery(tiny_embedded, tmp_path, grids=grids)))
    names = [c.name for c in cells]
    assert len(cells) == 4 + 4 and len({c.key for c in cells}) == len(cells)
    assert not any(n.startswith("again/") for n in names)
    longer = [c for c in cells if c.grid == "f3"]
    assert all(c.config.epochs == 2.0 for c in longer) and all(c.config.epochs == 1.0 for c in cells if c.grid == "f1")
    for bad, message in (([{"colour": "red"}], "grid entries take"), ([{"datasets": ["nope"]}], "declare them")):
        with pytest.raises(UnilensError, match=message):
            cells_of(load_battery(_battery(tiny_embedded, tmp_path, grids=bad)))


def test_a_shard_trains_only_its_cells_and_leaves_the_report(tiny_embedded, tmp_path):
    import pytest

    from analyses.battery import parse_shard
    from unilens.errors import UnilensError

    cfg = load_battery(_battery(tiny_embedded, tmp_path, variants=["no-such-variant"]))  # fails at once
    table = run_battery(cfg, log=lambda *_: None, shard=parse_shard("1/2"))
    assert table["status"].tolist() == ["pending", "failed"] * 2
    assert not (tmp_path / "battery" / "report.html").exists()
    for bad in ("2/2", "1", "a/b"):
        with pytest.raises(UnilensError, match="INDEX/COUNT"):
            parse_shard(bad)


def test_shipped_batteries_resolve_and_share_their_transfer_cells():
    """Every battery under configs/battery/ resolves without artefacts (a typo there fails here, not two hours into a
    run), and the transfer cells that paper.yaml, quick.yaml and transfer_weather.yaml promise to share have one key."""
    from pathlib import Path

    keys = {p.stem: {c.key: c for c in cells_of(load_battery(p))} for p in Path("configs/battery").glob("*.yaml")}
    assert {name: len(cells) for name, cells in keys.items()} == {
        "paper": 24,
        "paper-full": 147,
        "paper-gpu": 49,
        "quick": 4,
        "smoke": 4,
        "transfer_weather": 8,
        "transfer_weather_lr3e-3": 2,
    }
    f3 = {k for k, c in keys["paper"].items() if c.grid == "f3"}
    assert len(f3) == 8 and f3 == set(keys["transfer_weather"]) and set(keys["quick"]) < f3
    assert {k for k, c in keys["paper-full"].items() if c.grid == "f3"} >= f3  # the full grid's seed 0 included
    assert not set(keys["transfer_weather_lr3e-3"]) & f3  # a different learning rate is a different cell


def test_model_fields_reach_the_cells_and_later_fields_keep_old_keys(tiny_embedded, tmp_path):
    import pytest

    from models.checkpoint import LATER_FIELDS, with_later_defaults
    from unilens.config import to_dict
    from unilens.errors import UnilensError
    from unilens.io import sha256_json

    plain = cells_of(load_battery(_battery(tiny_embedded, tmp_path)))
    grids = [{"name": "slots", "datasets": ["default"], "model": {"image_positions": True}}]
    slots = cells_of(load_battery(_battery(tiny_embedded, tmp_path, grids=grids)))
    assert slots and all(c.config.model.image_positions for c in slots)
    assert not {c.key for c in slots} & {c.key for c in plain}
    # a cell keyed before the later fields existed keeps its key while they are at their defaults
    later = {
        "image_positions",
        "image_order",
        "lr_schedule",
        "precision",
        "gen_input_corruption",
        "gen_prompt_dropout",
        "repeats",
        "text_loss_unit",
        "init_from",
        "init_fresh_generation",
        "init_fresh_understanding",
        "gen_region_weights",
        "answer_weights",
        "und_slot_rank",
        "und_aux_loss",
        "image_token_norm",
        "und_feature_norm",
        "gen_feature_norm",
    }
    assert {path[-1] for path in LATER_FIELDS} == later
    for cell in plain:
        resolved = to_dict(cell.config)
        resolved.pop("out")
        for path in LATER_FIELDS:
            parent = resolved
            for key in path[:-1]:
                parent = parent[key]
            parent.pop(path[-1])
        assert sha256_json(resolved)[:12] == cell.key
        assert with_later_defaults(resolved)["model"]["image_positions"] is False
        assert with_later_defaults(resolved)["model"]["image_order"] == "raster"
        assert with_later_defaults(resolved)["lr_schedule"] == "cosine"
        assert with_later_defaults(resolved)["precision"] == "auto"
        assert with_later_defaults(resolved)["model"]["gen_input_corruption"] == 0.0
        assert with_later_defaults(resolved)["model"]["gen_prompt_dropout"] == 0.0
        assert with_later_defaults(resolved)["arm"]["repeats"] == {}
        assert with_later_defaults(resolved)["init_from"] == ""
        assert with_later_defaults(resolved)["init_fresh_generation"] is False
        assert with_later_defaults(resolved)["init_fresh_understanding"] is False
        assert with_later_defaults(resolved)["gen_region_weights"] == {}
        assert with_later_defaults(resolved)["answer_weights"] == {}
    with pytest.raises(UnilensError, match="set by the grid itself"):
        cells_of(load_battery(_battery(tiny_embedded, tmp_path, model={"variant": "vq-vq"})))
    with pytest.raises(UnilensError, match="unknown key"):
        cells_of(load_battery(_battery(tiny_embedded, tmp_path, model={"image_position": True})))
