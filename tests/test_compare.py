"""`unilens compare`: A - B per question over eval folders, with a CI over test images and runs."""

import numpy as np
import pandas as pd
import pytest

from analyses.compare import compare_evals, run_compare
from tasks.scoring import bootstrap_ci
from unilens.cli import main
from unilens.errors import UnilensError

BUILD = "dataset:aaaa llm:bbbb"


def _eval_folder(path, time_gap, hour_right, steps=(100,), truth="01h", drop=()):
    """A hand-made eval folder: one time question per image (two on even images, turns 0 and 1), its true-image
    loss 1 and swapped-image loss 1 + gap; the greedy hour right where `hour_right` says."""
    tags = {"checkpoint": "step-000100", "fraction": 1.0, "build": BUILD}
    reliance, vqa = [], []
    for step in steps:
        for i, gap in enumerate(time_gap):
            for turn in range(2 if i % 2 == 0 else 1):
                if (i, turn) in drop:
                    continue
                image = f"img_{i:03d}"
                q = {"image": image, "attribute": "time", "turn": turn, "step": step, **tags}
                reliance += [{**q, "condition": "true", "answer_nll": 1.0, "exact_tf": 0.0}]
                reliance += [{**q, "condition": "swapped", "answer_nll": 1.0 + gap + 0.1 * turn, "exact_tf": 0.0}]
                right = float(hour_right[i])
                vqa += [{**q, "value": truth, "prediction": "x", "soft": right, "exact": 0.0, "hour": right}]
    path.mkdir(parents=True)
    pd.DataFrame(reliance).to_csv(path / "image_reliance.csv", index=False)
    pd.DataFrame(vqa).to_csv(path / "vqa.csv", index=False)
    pd.DataFrame([{"task": "vqa", "attribute": "time", "mean": 0.0, **tags}]).to_csv(path / "summary.csv", index=False)
    return path


def _row(table, task, metric, arm):
    r = table[(table["task"] == task) & (table["attribute"] == "time") & (table["metric"] == metric)]
    return r[r["arm"] == arm].iloc[0]


@pytest.fixture
def gaps():
    rng = np.random.default_rng(3)
    return rng.normal(1.0, 1.0, 30), rng.normal(0.5, 1.0, 30), rng.random(30) < 0.6, rng.random(30) < 0.3


def test_one_run_per_arm_is_the_paired_image_bootstrap(tmp_path, gaps):
    gap_a, gap_b, right_a, right_b = gaps
    a = _eval_folder(tmp_path / "a", gap_a, right_a)
    b = _eval_folder(tmp_path / "b", gap_b, right_b)
    table = compare_evals([a], [b])
    # per question, as image_gap pairs them; the turn-1 questions add 0.1 in both arms
    images = np.array([f"img_{i:03d}" for i in range(30) for _ in range(2 if i % 2 == 0 else 1)])
    per_q_a = np.array([g + 0.1 * t for i, g in enumerate(gap_a) for t in range(2 if i % 2 == 0 else 1)])
    per_q_b = np.array([g + 0.1 * t for i, g in enumerate(gap_b) for t in range(2 if i % 2 == 0 else 1)])
    assert tuple(_row(table, "image_gap", "gap", "A")[["mean", "lo", "hi"]]) == pytest.approx(
        bootstrap_ci(per_q_a, images)
    )
    assert tuple(_row(table, "image_gap", "gap", "A - B")[["mean", "lo", "hi"]]) == pytest.approx(
        bootstrap_ci(per_q_a - per_q_b, images)
    )
    diff = _row(table, "image_gap", "gap", "A - B")
    assert diff["n_questions"] == 45 and diff["n_images"] == 30 and diff["runs"] == 2
    assert np.isnan(_row(table, "image_gap", "gap", "A")["run_sd"])


def test_identical_arms_differ_by_exactly_zero(tmp_path, gaps):
    gap_a, _, right_a, _ = gaps
    a = _eval_folder(tmp_path / "a", gap_a, right_a)
    b = _eval_folder(tmp_path / "b", gap_a, right_a)
    for task, metric in (("image_gap", "gap"), ("vqa", "hour"), ("vqa_first_turn", "hour")):
        assert tuple(_row(compare_evals([a], [b]), task, metric, "A - B")[["mean", "lo", "hi"]]) == (0.0, 0.0, 0.0)


def test_a_second_seed_far_from_the_first_widens_the_interval(tmp_path, gaps):
    gap_a, gap_b, right_a, right_b = gaps
    a0 = _eval_folder(tmp_path / "a0", gap_a, right_a)
    a1 = _eval_folder(tmp_path / "a1", gap_a - 1.2, right_a)  # the same questions, 1.2 nats lower everywhere
    b = _eval_folder(tmp_path / "b", gap_b, right_b)
    one = _row(compare_evals([a0], [b]), "image_gap", "gap", "A - B")
    two_table = compare_evals([a0, a1], [b])
    two = _row(two_table, "image_gap", "gap", "A - B")
    assert two["mean"] == pytest.approx(one["mean"] - 0.6)
    assert two["hi"] - two["lo"] > 1.5 * (one["hi"] - one["lo"])
    assert _row(two_table, "image_gap", "gap", "A")["run_sd"] == pytest.approx(1.2 / np.sqrt(2))
    assert _row(two_table, "image_gap", "gap", "A")["runs"] == 2


def test_only_questions_every_run_asked_are_compared(tmp_path, gaps):
    gap_a, gap_b, right_a, right_b = gaps
    a = _eval_folder(tmp_path / "a", gap_a, right_a, drop={(0, 1), (2, 0)})
    b = _eval_folder(tmp_path / "b", gap_b, right_b)
    assert _row(compare_evals([a], [b]), "image_gap", "gap", "A - B")["n_questions"] == 43


def test_first_turn_rows_keep_turn_zero_only(tmp_path, gaps):
    gap_a, gap_b, right_a, right_b = gaps
    table = compare_evals(
        [_eval_folder(tmp_path / "a", gap_a, right_a)], [_eval_folder(tmp_path / "b", gap_b, right_b)]
    )
    first = _row(table, "vqa_first_turn", "hour", "A")
    assert first["n_questions"] == 30 and first["mean"] == pytest.approx(right_a.mean())


def test_bad_inputs_are_named(tmp_path, gaps):
    gap_a, gap_b, right_a, right_b = gaps
    good = _eval_folder(tmp_path / "good", gap_a, right_a)
    two_steps = _eval_folder(tmp_path / "two", gap_b, right_b, steps=(100, 200))
    with pytest.raises(UnilensError, match="--checkpoints last"):
        compare_evals([good], [two_steps])
    other = _eval_folder(tmp_path / "other", gap_b, right_b, truth="02h")
    with pytest.raises(UnilensError, match="different datasets"):
        compare_evals([good], [other])
    # a run trained on another dataset (its build's dataset hash) but scored on the same questions is compared
    trained_elsewhere = _eval_folder(tmp_path / "elsewhere", gap_b, right_b)
    summary = pd.read_csv(trained_elsewhere / "summary.csv").assign(build="dataset:cccc llm:bbbb")
    summary.to_csv(trained_elsewhere / "summary.csv", index=False)
    assert _row(compare_evals([good], [trained_elsewhere]), "image_gap", "gap", "A - B")["n_questions"] == 45
    with pytest.raises(UnilensError, match="not an eval folder"):
        compare_evals([good], [tmp_path / "missing"])
    with pytest.raises(UnilensError, match="at least one eval folder"):
        compare_evals([good], [])


def test_cli_writes_the_table_and_the_figure(tmp_path, gaps, capsys):
    gap_a, gap_b, right_a, right_b = gaps
    a = _eval_folder(tmp_path / "a", gap_a, right_a)
    b = _eval_folder(tmp_path / "b", gap_b, right_b)
    main(["compare", "--a", str(a), "--b", str(b), "--out", str(tmp_path / "out"), "--label-a", "mixed"])
    table = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert (tmp_path / "out" / "compare.png").stat().st_size > 0
    assert set(table["arm"]) == {"A", "B", "A - B"} and set(table["label_a"]) == {"mixed"}
    assert "image_gap" in capsys.readouterr().out
    assert table.equals(run_compare([a], [b], tmp_path / "again", "mixed", "B"))
