"""Which build a result came from: the content hashes of the embedded parts and the machine that built them.

Why: `unilens embedded build` has given different weights from the same code and config in different sessions
(docs/results/2026-12-02, sixth part: a VQ tokenizer whose codes read the weather at 0.775 in one build and 0.925 in
another), so a figure is comparable only with figures from the same build. `{root}/build.json` records each part's
hashes and, for the parts built in that invocation, the machine facts that steer floating point on the CPU (torch
version, its CPU kernel level, thread count, instruction sets); `unilens eval` names the build of every checkpoint.

    weights   hash of the weight files alone (safetensors; the dataset's own content hash): equal means same numbers
    hash      the hash checkpoints record: weights plus config.json without its provenance (training report with
              wall-clock seconds, dataset path), so equal weights give equal hashes; checkpoints written before
              2026-12-03 recorded config.json's bytes and are still accepted (models.checkpoint.matches_recorded)
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from models.checkpoint import current_hash, entry_hash
from unilens.io import atomic_write_json, sha256_file, sha256_json

PARTS = ("data", "semantic", "vq", "lm")
DEPENDENCY_OF_PART = {"data": "dataset", "semantic": "semantic_encoder", "vq": "vq_encoder", "lm": "llm"}
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
UNKNOWN_MACHINE = "unknown: built before build.json was written"


def weights_hash(part: str, folder: str | Path) -> str:
    folder = Path(folder)
    if part == "data":
        return entry_hash("dataset", folder)  # the dataset's content hash already covers its data files alone
    return sha256_json({f.name: sha256_file(f) for f in sorted(folder.glob("*.safetensors"))})


def machine_facts() -> dict:
    """What decides the floating-point path of a CPU build: the same code gives other weights when these differ."""
    cpu, flags = platform.processor() or "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cpu": cpu,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def build_record(paths: dict[str, Path], built_now: set[str], previous: dict | None = None) -> dict:
    """One entry per existing part: hashes, and the machine that built it (this one if built now; else the previous
    record's when its weights are unchanged; else unknown)."""
    here, parts = machine_facts(), {}
    for part in PARTS:
        folder = paths[part]
        if not folder.exists():
            continue
        entry = {
            "path": str(folder.resolve()),
            "hash": entry_hash(DEPENDENCY_OF_PART[part], folder),
            "weights": weights_hash(part, folder),
        }
        old = (previous or {}).get("parts", {}).get(part, {})
        if part in built_now:
            entry["built_on"] = here
        elif old.get("weights") == entry["weights"]:
            entry["built_on"] = old.get("built_on", UNKNOWN_MACHINE)
        else:
            entry["built_on"] = UNKNOWN_MACHINE
        parts[part] = entry
    return {"build": build_id({p: e["hash"] for p, e in parts.items()}), "parts": parts}


def build_id(hashes: dict[str, str]) -> str:
    return sha256_json(dict(sorted(hashes.items())))[:12]


def write_build_record(root: str | Path, paths: dict[str, Path], built_now: set[str]) -> dict:
    path = Path(root) / "build.json"
    previous = json.loads(path.read_text()) if path.is_file() else None
    record = build_record(paths, built_now, previous)
    atomic_write_json(path, record)
    return record


def describe_build(record: dict) -> str:
    """One line: the build id and its parts' short hashes, in the form of the `build` column of `unilens eval`."""
    parts = dependency_label({DEPENDENCY_OF_PART[p]: e for p, e in record["parts"].items()})
    return f"build {record['build']} ({parts})"


def dependency_label(dependencies: dict) -> str:
    """A checkpoint's dependencies as one short, sortable string: the column that tells builds apart in eval CSVs."""
    return " ".join(f"{what}:{current_hash(what, entry)[:12]}" for what, entry in sorted(dependencies.items()))
