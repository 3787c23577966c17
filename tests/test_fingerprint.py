"""The build record: which weights a result came from, and the machine that built them."""

import json
import os
import time

import torch
from safetensors.torch import load_file, save_file

from models.embedded import build_embedded
from models.embedded import tiny_embedded as tiny_embedded_config
from models.encoders.train import train_vq
from models.features import encoder_hash, legacy_encoder_hash
from models.fingerprint import UNKNOWN_MACHINE, machine_facts, weights_hash, write_build_record
from tests.conftest import copy_tree


def test_build_records_every_part_and_the_machine_that_built_it(tiny_embedded):
    record = json.loads((tiny_embedded / "build.json").read_text())
    assert set(record["parts"]) == {"data", "semantic", "vq", "lm"}
    here = machine_facts()
    for part, entry in record["parts"].items():
        assert entry["built_on"] == here, part
        assert entry["weights"] == weights_hash(part, tiny_embedded / part)
    assert here["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert len(record["build"]) == 12


def test_rerun_keeps_the_record_and_changed_weights_lose_their_machine(tiny_embedded, tmp_path):
    root = copy_tree(tiny_embedded, tmp_path / "copy")
    before = json.loads((root / "build.json").read_text())
    cfg = tiny_embedded_config(root)
    build_embedded(cfg, progress=False, log=lambda *_: None)  # every part exists: nothing rebuilt
    after = json.loads((root / "build.json").read_text())
    assert after["build"] == before["build"]
    assert all(after["parts"][p]["built_on"] == before["parts"][p]["built_on"] for p in before["parts"])

    weights = root / "vq" / "model.safetensors"
    state = load_file(str(weights))
    name = next(iter(state))
    state[name] = state[name] + 1e-3
    save_file(state, str(weights))
    changed = write_build_record(root, cfg.paths(), built_now=set())
    assert changed["build"] != before["build"]
    assert changed["parts"]["vq"]["built_on"] == UNKNOWN_MACHINE
    assert changed["parts"]["vq"]["weights"] != before["parts"]["vq"]["weights"]
    assert changed["parts"]["lm"]["built_on"] == before["parts"]["lm"]["built_on"]


def test_a_part_built_twice_on_one_machine_has_the_same_weights(tiny_embedded, tmp_path):
    """Same code, config and machine give the same numbers, so builds that differ point at the machine."""
    cfg = tiny_embedded_config(tmp_path / "unused").vq
    cfg.dataset = str(tiny_embedded / "data")
    train_vq(cfg, tmp_path / "vq_a", progress=False)
    train_vq(cfg, tmp_path / "vq_b", progress=False)
    assert weights_hash("vq", tmp_path / "vq_a") == weights_hash("vq", tmp_path / "vq_b")
    assert weights_hash("vq", tmp_path / "vq_a") == weights_hash("vq", tiny_embedded / "vq")


def test_equal_weights_give_the_checkpoint_hash_whatever_the_training_report_says(tiny_embedded, tmp_path):
    """The hash checkpoints record leaves out config.json's provenance (wall-clock seconds, the dataset path typed):
    a rebuild with equal weights is the same dependency, and any change to the weights or architecture is not."""
    vq = copy_tree(tiny_embedded / "vq", tmp_path / "vq")
    before, legacy_before = encoder_hash(vq), legacy_encoder_hash(vq)
    config = json.loads((vq / "config.json").read_text())
    config["train_report"]["seconds"] = config["train_report"]["seconds"] + 12.5
    config["dataset"] = "/elsewhere/data"
    (vq / "config.json").write_text(json.dumps(config))
    assert encoder_hash(vq) == before
    assert legacy_encoder_hash(vq) != legacy_before
    config["config"]["codebook_size"] += 1
    (vq / "config.json").write_text(json.dumps(config))
    assert encoder_hash(vq) != before


def test_file_digests_are_reused_only_while_the_file_is_unchanged(tmp_path, monkeypatch):
    from unilens import io

    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    old = time.time() - 100
    os.utime(path, (old, old))
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: reads.append(p) or real_open(p, *a, **k))
    first = io.sha256_file(path)
    assert io.sha256_file(path) == first and len(reads) == 1  # the second call did not read the file

    path.write_bytes(b"b" * 1000)  # same size, rewritten in place: a new timestamp
    second = io.sha256_file(path)
    assert second != first and len(reads) == 2

    # Rewritten again within the clock's resolution, so that the timestamp does not change: a just-written file is
    # never cached, so the rewrite is not answered with a stale digest.
    path.write_bytes(b"c" * 1000)
    stamp = path.stat().st_mtime_ns
    third = io.sha256_file(path)
    path.write_bytes(b"d" * 1000)
    os.utime(path, ns=(stamp, stamp))
    assert io.sha256_file(path) != third
