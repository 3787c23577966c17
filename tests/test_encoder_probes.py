"""Encoder probes: what an input space carries, told apart from what the LLM learned to read."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from probes.encoder import encoder_probe, split_images
from tasks.records import load_dataset
from unilens.errors import UnilensError

WEATHERS = ("sunny", "cloudy", "raining")


class PlantedSpace:
    """Noise tokens, with weather written into token 0 and its negative into token 1: averaging erases it."""

    kind = "semantic"

    def __init__(self, dataset, dim: int = 8, tokens: int = 4):
        rng = np.random.default_rng(0)
        self.x = {}
        for rec in dataset.train + dataset.test:
            if rec["image"] in self.x:
                continue
            x = rng.normal(0, 0.1, size=(tokens, dim)).astype(np.float32)
            x[0, WEATHERS.index(rec["watch"]["weather"])] += 3.0
            x[1] = -x[0] + rng.normal(0, 0.1, size=dim)
            self.x[rec["image"]] = x

    def inputs(self, image_id: str) -> torch.Tensor:
        return torch.from_numpy(self.x[image_id])


def test_pooling_decides_what_a_probe_can_find(tiny_embedded):
    dataset = load_dataset(tiny_embedded / "data")
    table = encoder_probe(PlantedSpace(dataset), dataset, attributes=("weather", "weather_pos"), n_boot=200)
    score = table.set_index(["pool", "attribute"]).score
    assert score["tokens", "weather"] == 1.0
    assert score["mean", "weather"] < 0.8  # the planted signal cancels in the average
    # nothing about position was planted: no better than guessing from the training labels
    assert score["tokens", "weather_pos"] <= table.majority.max() + 0.25
    assert (table.low <= table.score).all() and (table.score <= table.high).all()


class IconSpace:
    """A 4 x 4 token grid of noise with the weather written at the tokens that draw the icon, wherever it sits in
    that image, and its negative at the mirrored corner's tokens: averaging every token erases it."""

    kind = "semantic"

    def __init__(self, dataset, dim: int = 8):
        from tasks.render import region_slots
        from tasks.world import Watch

        rng = np.random.default_rng(0)
        self.x = {}
        for rec in dataset.train + dataset.test:
            x = rng.normal(0, 0.1, size=(16, dim)).astype(np.float32)
            signal = 3.0 * np.eye(dim)[WEATHERS.index(rec["watch"]["weather"])]
            cells = region_slots(Watch.from_dict(rec["watch"]), "weather", 4)
            x[cells] += signal
            x[[15 - c for c in cells]] -= signal  # one cell each at this grid size
            self.x[rec["image"]] = x

    def inputs(self, image_id: str) -> torch.Tensor:
        return torch.from_numpy(self.x[image_id])


def test_region_pooling_reads_the_item_where_the_image_draws_it(tiny_embedded):
    dataset = load_dataset(tiny_embedded / "data")
    table = encoder_probe(
        IconSpace(dataset), dataset, attributes=("weather",), pools=("mean", "weather_region"), n_boot=200
    )
    score = table.set_index("pool").score
    assert score["weather_region"] == 1.0
    assert score["mean"] < 0.8  # the planted signal cancels in the whole image's average
    with pytest.raises(UnilensError, match="unknown pooling 'icon'"):
        encoder_probe(IconSpace(dataset), dataset, attributes=("weather",), pools=("icon",))


def test_train_and_test_images_are_disjoint(tiny_embedded):
    train, test = split_images(load_dataset(tiny_embedded / "data"))
    assert len(train) >= 10 and len(test) >= 10
    assert not set(train.image) & set(test.image)


def test_unknown_attribute_is_named(tiny_embedded):
    dataset = load_dataset(tiny_embedded / "data")
    with pytest.raises(UnilensError, match="colour"):
        encoder_probe(PlantedSpace(dataset), dataset, attributes=("colour",))


def test_cli_probes_both_embedded_encoders(tiny_embedded, tmp_path):
    out = tmp_path / "probes"
    cmd = [
        sys.executable,
        "-m",
        "unilens.cli",
        "encoders",
        "probe",
        str(tiny_embedded / "semantic"),
        str(tiny_embedded / "vq"),
        "--dataset",
        str(tiny_embedded / "data"),
        "--out",
        str(out),
        "--cache",
        str(tmp_path / "cache"),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    table = pd.read_csv(out / "encoder_probes.csv")
    assert (out / "encoder_probes.png").is_file()
    assert len(table) == 2 * 2 * 6  # encoders x poolings x attributes
    assert set(table.space) == {"semantic", "vq"}
    assert table.score.notna().all()
