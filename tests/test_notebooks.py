"""Every notebook runs top to bottom at smoke size (toy artefacts built once per session)."""

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    from analyses.workspace import workspace

    root = tmp_path_factory.mktemp("smoke")
    workspace(smoke=True, root=root)  # build once, outside the kernels
    return root


def test_there_are_five_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_smoke_size(path, smoke_dir, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("UNILENS_SMOKE", "1")
    monkeypatch.setenv("UNILENS_SMOKE_DIR", str(smoke_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": os.getcwd()}}).execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") in ("display_data", "execute_result") for o in outputs)


def test_report_over_the_smoke_results(smoke_dir, tmp_path):
    """After the notebooks ran, one HTML page holds every section with its answers and embedded figures."""
    from unilens.cli import main

    results = smoke_dir / "results"
    folders = [
        smoke_dir / "probe_set" / "sem-sem-mixed-lora",
        results / "probes" / "probe_set",
        results / "patching" / "probe_set",
        results / "transfer_report" / "weather_sem_sem",
    ]
    out = tmp_path / "report.html"
    assert main(["report", *map(str, folders), "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("<section>") == 4
    assert "data:image/png;base64," in page and "held-out multiple choice" in page
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "x.html")]) == 2


def test_full_workspace_names_the_commands_for_what_is_missing(tmp_path, monkeypatch):
    from analyses.workspace import workspace
    from unilens.errors import UnilensError

    monkeypatch.chdir(tmp_path)
    ws = workspace(smoke=False)
    assert set(ws.missing) == {"embedded", "transfer_data", "transfer_lora", "probe_set", "transfer"}
    with pytest.raises(UnilensError, match=r"unilens embedded build configs/embedded\.yaml"):
        ws.require("embedded")
    with pytest.raises(UnilensError, match=r"configs/train/probe_set/sem-sem-mixed-lora\.yaml"):
        ws.require("probe_set")
    with pytest.raises(UnilensError, match=r"unilens battery run configs/battery/quick\.yaml"):
        ws.require("transfer")


def test_full_workspace_finds_the_transfer_models_in_a_battery(tmp_path, monkeypatch):
    import json

    from analyses.workspace import workspace

    monkeypatch.chdir(tmp_path)
    for key, name, status in (
        ("aaa", "weather.sem-sem.mixed.lora.s0", "done"),
        ("bbb", "weather.sem-sem.und-only.lora.s0", "failed"),
    ):
        folder = tmp_path / "runs/battery/quick/cells" / key
        folder.mkdir(parents=True)
        (folder / "cell.json").write_text(json.dumps({"name": name, "status": status}))
    runs = workspace(smoke=False).transfer_runs
    assert runs["mixed+lora"] == Path("runs/battery/quick/cells/aaa")  # a finished cell stands in
    assert runs["und-only+lora"] == Path("runs/transfer/weather-sem-sem-und-only-lora")  # a failed one does not
