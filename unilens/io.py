"""Atomic writes: a result or a folder either exists whole or not at all, so a killed run never leaves half files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unilens.errors import UnilensError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def check_new_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse a folder that exists (unless overwrite) or whose parent is missing, with a message naming the fix."""
    out = Path(out)
    if not out.parent.is_dir():
        raise UnilensError(
            f"output folder's parent does not exist: {out.parent} (create it first, or choose another --out)"
        )
    if out.exists() and not overwrite:
        raise UnilensError(f"output folder already exists: {out} (pass --overwrite to replace it)")
    return out


@contextlib.contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces `out` in one rename, on failure it vanishes."""
    out = check_new_output_dir(out, overwrite)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        os.replace(out, trash / "old")
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


# Digests of files already hashed in this process, keyed by what a rewrite changes. A real LLM's weights take tens of
# seconds to hash and a checkpoint's dependencies are hashed more than once (checked on load, then labelled in every
# result row), so each file is read once. Files changed within the last few seconds are not cached: their timestamp
# may not yet differ from a rewrite's (the "racy clean" case git guards against the same way).
_DIGESTS: dict[tuple, str] = {}
RACY_SECONDS = 3.0


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    if time.time() - stat.st_mtime > RACY_SECONDS:
        _DIGESTS[key] = digest
    return digest


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
