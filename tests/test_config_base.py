"""`base:` in a YAML config: a variation is its changed lines over another config, merged the documented way."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from unilens.config import load_config, load_yaml
from unilens.errors import UnilensError


@dataclass
class Inner:
    size: int = 1
    name: str = "inner"


@dataclass
class Outer:
    lr: float = 1.0
    seed: int = 0
    inner: Inner = field(default_factory=Inner)
    weights: dict[str, float] = field(default_factory=dict)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_child_overrides_merges_nested_and_null_restores_the_default(tmp_path):
    _write(tmp_path / "base.yaml", "lr: 0.5\nseed: 3\ninner: {size: 4, name: big}\nweights: {time: 4.0, sky: 2.0}\n")
    child = _write(
        tmp_path / "child.yaml", "base: base.yaml\nseed: null\ninner: {size: 8}\nweights: {sky: null, battery: 1.5}\n"
    )
    cfg = load_config(Outer, child)
    assert cfg == Outer(lr=0.5, seed=0, inner=Inner(size=8, name="big"), weights={"time": 4.0, "battery": 1.5})


def test_base_is_read_relative_to_the_including_file_and_chains(tmp_path):
    _write(tmp_path / "a" / "root.yaml", "lr: 0.25\n")
    _write(tmp_path / "a" / "mid.yaml", "base: root.yaml\nseed: 7\n")
    leaf = _write(tmp_path / "b" / "leaf.yaml", "base: ../a/mid.yaml\ninner: {name: leaf}\n")
    assert load_config(Outer, leaf) == Outer(lr=0.25, seed=7, inner=Inner(name="leaf"))
    assert "base" not in load_yaml(leaf)


def test_missing_base_names_the_file_and_where_it_was_looked_for(tmp_path):
    child = _write(tmp_path / "child.yaml", "base: nowhere.yaml\n")
    with pytest.raises(UnilensError, match=r"base config not found: .*nowhere\.yaml.*relative to the folder of child"):
        load_yaml(child)


def test_a_cycle_of_bases_is_an_error_not_a_recursion(tmp_path):
    _write(tmp_path / "one.yaml", "base: two.yaml\n")
    two = _write(tmp_path / "two.yaml", "base: one.yaml\n")
    with pytest.raises(UnilensError, match="cycle"):
        load_yaml(two)
    itself = _write(tmp_path / "self.yaml", "base: self.yaml\nlr: 1\n")
    with pytest.raises(UnilensError, match="cycle"):
        load_yaml(itself)


def test_base_must_be_a_path(tmp_path):
    child = _write(tmp_path / "child.yaml", "base: [a.yaml]\n")
    with pytest.raises(UnilensError, match="base: expected the path of another YAML config"):
        load_yaml(child)


def test_a_shipped_variation_equals_its_base_but_for_its_own_lines():
    from models.train import TrainConfig

    folder = Path("configs/train/dense/gen_first")
    base = load_config(TrainConfig, folder / "vq-sem-2t-time-and-gen-after-1c.yaml")
    variation = load_config(TrainConfig, folder / "vq-sem-2p-time-and-gen.yaml")
    assert variation.init_from == "" and base.init_from
    assert variation.out != base.out
    variation.init_from, variation.out = base.init_from, base.out
    assert variation == base
