"""Scoring functions on hand-made answers, including unparsable ones."""

import numpy as np
import pytest

from tasks.scoring import (
    bootstrap_ci,
    exact_match,
    hour_match,
    parse_caption,
    score_caption,
    score_vqa,
    soft_score,
    summarize,
)
from tasks.world import Watch

W = Watch(
    hour=3,
    minute=25,
    second=41,
    weather="cloudy",
    battery=57,
    weather_pos="top-left",
    battery_pos="bottom-right",
    face_color=(10, 20, 30),
)


@pytest.mark.parametrize(
    "attribute,text,truth,soft,exact",
    [
        ("time", "03:25:41", (3, 25, 41), 1.0, 1.0),
        ("time", "The watch shows 15:25:41 now", (3, 25, 41), 1.0, 1.0),  # 15 h is 3 h on a dial
        ("time", "09:25:41", (3, 25, 41), 1 - (6 / 6) / 3, 0.0),  # worst hour error
        ("time", "03:55:11", (3, 25, 41), 1 - (30 / 30 + 30 / 30) / 3, 0.0),
        ("time", "11:59:59", (0, 0, 1), 1 - (1 / 6 + 1 / 30 + 2 / 30) / 3, 0.0),  # circular wrap-around
        ("time", "quarter past three", (3, 15, 0), 0.0, 0.0),
        ("battery", "57%", 57, 1.0, 1.0),
        ("battery", "It is at 47 %.", 57, 0.9, 0.0),
        ("battery", "full", 57, 0.0, 0.0),
        ("weather", "cloudy", "cloudy", 1.0, 1.0),
        ("weather", "It looks Cloudy today", "cloudy", 1.0, 1.0),
        ("weather", "sunny or cloudy", "cloudy", 1.0, 0.0),  # paper's soft score: substring; exact: ambiguous
        ("weather", "rainy", "raining", 0.0, 1.0),  # soft wants the exact string; exact parses the synonym
        ("weather", "", "sunny", 0.0, 0.0),
        ("weather_pos", "top-left", "top-left", 1.0, 1.0),
        ("weather_pos", "at the top left corner", "top-left", 1.0, 1.0),
        ("battery_pos", "bottom-left", "bottom-right", 0.0, 0.0),
        ("battery_pos", "top left or bottom right", "bottom-right", 1.0, 0.0),
    ],
)
def test_soft_and_exact(attribute, text, truth, soft, exact):
    assert soft_score(attribute, text, truth) == pytest.approx(soft)
    assert exact_match(attribute, text, truth) == exact


def test_score_vqa_rows_and_per_value_breakdown():
    rows = [
        {"image": "a", "attribute": "weather", "prediction": "cloudy", "watch": W},
        {"image": "a", "attribute": "battery", "prediction": "50%", "watch": W, "turn": 1},
        {"image": "b", "attribute": "time", "prediction": "garbage", "watch": W.to_dict()},
    ]
    df = score_vqa(rows)
    assert list(df["soft"]) == pytest.approx([1.0, 0.93, 0.0])
    assert list(df["exact"]) == [1.0, 0.0, 0.0]
    assert list(df["value"]) == ["cloudy", "50-59%", "03h"]
    table = summarize(df, by=["attribute"], n_boot=200)
    assert set(table["attribute"]) == {"weather", "battery", "time"}
    assert {"soft_lo", "soft_hi", "exact_lo", "n"} <= set(table.columns)


@pytest.mark.parametrize(
    "text,truth,hour",
    [
        ("03:59:59", (3, 25, 41), 1.0),  # the hour is read even when nothing else is
        ("15:00:00", (3, 25, 41), 1.0),  # 15 h is 3 h on a dial
        ("04:25:41", (3, 25, 41), 0.0),
        ("12:10:00", (0, 10, 0), 1.0),
        ("03:25", (3, 25, 41), 0.0),  # unparsable: no seconds
        ("03:25:41 or 04:25:41", (3, 25, 41), 0.0),  # two different times stated
    ],
)
def test_hour_match(text, truth, hour):
    assert hour_match(text, truth) == hour


def test_the_hour_is_summarised_for_time_answers_only():
    rows = [
        {"image": "a", "attribute": "time", "prediction": "03:59:59", "watch": W},
        {"image": "b", "attribute": "time", "prediction": "05:25:41", "watch": W},
        {"image": "a", "attribute": "weather", "prediction": "sunny", "watch": W},
    ]
    df = score_vqa(rows)
    assert list(df["hour"][:2]) == [1.0, 0.0] and np.isnan(df["hour"][2])
    table = summarize(df, by=["attribute"], metrics=("soft", "exact", "hour"), n_boot=200).set_index("attribute")
    assert table.loc["time", "hour"] == 0.5 and np.isnan(table.loc["weather", "hour"])
    assert table.loc["weather", "soft"] == 0.0


def test_caption_scoring():
    good = (
        "The image shows a smart watch, showing the time 03:25:41, with cloudy weather displayed, with battery level"
        " 57%, with weather icon at top-left, with battery indicator at bottom-right."
    )
    assert parse_caption(good) == {
        "time": (3, 25, 41),
        "weather": "cloudy",
        "battery": 57,
        "weather_pos": "top-left",
        "battery_pos": "bottom-right",
    }
    s = score_caption(good, W)
    assert s["precision"] == 1.0 and s["recall"] == 1.0
    half = "A smart watch is shown, showing the time 03:25:41, with sunny weather displayed."
    s = score_caption(half, W)
    assert s["stated"] == 2 and s["precision"] == 0.5 and s["recall"] == pytest.approx(1 / 5)
    assert score_caption("nonsense", W)["precision"] == 0.0


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small = rng.random(30) < 0.7
    big = rng.random(3000) < 0.7
    m1, lo1, hi1 = bootstrap_ci(small, seed=1)
    m2, lo2, hi2 = bootstrap_ci(big, seed=1)
    assert lo1 <= m1 <= hi1 and lo2 <= m2 <= hi2
    assert (hi2 - lo2) < (hi1 - lo1) / 5
    assert lo2 < 0.7 < hi2
    # grouped resampling: identical values within groups widen nothing when groups are singletons
    g = bootstrap_ci(big, groups=np.arange(3000), seed=1)
    assert g[0] == pytest.approx(m2)
