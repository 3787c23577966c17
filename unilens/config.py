"""Plain dataclass configs read from YAML, strictly: an unknown or mistyped key is an error, never ignored."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from unilens.errors import UnilensError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass `cls` from a dict, recursing into nested dataclasses; unknown keys raise UnilensError."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise UnilensError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UnilensError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(fields)} (check the spelling)")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_dict(arg, value, where)
        return value
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return _scalar(hint, value, where)


def _scalar(hint: Any, value: Any, where: str) -> Any:
    """Check (and where unambiguous, convert) a scalar against its field type, so a wrong value fails here with
    its name instead of deep inside a run."""
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 3e-3 (no dot in the mantissa) as a string
            except ValueError:
                pass
        raise UnilensError(f"{where}: expected a number, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UnilensError(f"{where}: expected an integer, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UnilensError(f"{where}: expected true or false, got {value!r}")
    if hint is str:
        if isinstance(value, bool):
            return str(value).lower()  # YAML reads `true` as a boolean; string fields keep "true"
        if isinstance(value, (str, int, float)):
            return str(value)
        raise UnilensError(f"{where}: expected a string, got {value!r}")
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass to plain dict (tuples become lists) so it round-trips through YAML and JSON."""
    return _plain(dataclasses.asdict(obj))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping. A top-level `base: OTHER.yaml` (relative to this file's folder) starts from that file's
    mapping: this file's keys override it, nested mappings merge key by key, and `null` drops a key so its
    default applies. A variation of a config is then its few changed lines, not a copy."""
    return _load_with_base(Path(path), ())


def _load_with_base(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    data = _read_mapping(path)
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str) or not base:
        raise UnilensError(f"{path}: base: expected the path of another YAML config, got {base!r}")
    base_path = path.parent / base
    here, target = path.resolve(), base_path.resolve()
    if target in (*chain, here):
        cycle = " -> ".join(str(p) for p in (*chain, here, target))
        raise UnilensError(f"{path}: base: configs include each other in a cycle ({cycle}); break the cycle")
    if not base_path.is_file():
        raise UnilensError(
            f"{path}: base config not found: {base_path} (base: is read relative to the folder of {path.name})"
        )
    return _merge(_load_with_base(base_path, (*chain, here)), data)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UnilensError(f"config file not found: {path} (give the path to an existing YAML file)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UnilensError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UnilensError(f"{path}: the top level must be a mapping of keys to values")
    return data


def load_config(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Load dataclass `cls` from a YAML file, optionally from one top-level section of it."""
    data = load_yaml(path)
    if section is not None:
        if section not in data:
            raise UnilensError(f"{path}: missing section '{section}:'")
        data = data[section]
    return from_dict(cls, data, where=str(path) + (f":{section}" if section else ""))
