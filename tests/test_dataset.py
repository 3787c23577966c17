"""Dataset folders: determinism, manifests, split frequencies, arms, bad input."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tasks.dataset import DataConfig, make_dataset
from tasks.records import load_dataset, read_records
from tasks.splits import ArmConfig, select_arm
from tasks.world import Nuisance
from unilens.cli import main
from unilens.errors import UnilensError


def tiny(**kw) -> DataConfig:
    base = dict(seed=3, image_size=32, n_images=60, n_test_images=30, contact_sheet_images=6)
    base.update(kw)
    return DataConfig(**base)


def test_same_seed_gives_byte_identical_dataset(tmp_path):
    a = make_dataset(tiny(), tmp_path / "a", progress=False)
    b = make_dataset(tiny(), tmp_path / "b", progress=False)
    c = make_dataset(tiny(seed=4), tmp_path / "c", progress=False)
    for name in ("images.npy", "images.jsonl", "train.jsonl", "test.jsonl", "contact_sheet.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mc = (json.loads((p / "manifest.json").read_text()) for p in (a, c))
    assert ma["content_hash"] == json.loads((b / "manifest.json").read_text())["content_hash"]
    assert ma["content_hash"] != mc["content_hash"]


def test_manifest_counts_and_histograms_match_records(tmp_path):
    ds = load_dataset(make_dataset(tiny(), tmp_path / "d", progress=False))
    m = ds.manifest
    assert m["counts"]["train_records"] == {"vqa": 60, "caption": 60, "generation": 60}
    assert m["counts"]["test_records"] == {"vqa": 30, "caption": 30, "generation": 30}
    weather = [r["watch"]["weather"] for r in ds.train if r["task"] == "vqa"]
    assert m["histograms"]["understanding"]["weather"] == {w: weather.count(w) for w in ("sunny", "cloudy", "raining")}
    assert m["config"]["n_images"] == 60
    assert (ds.folder / "contact_sheet.png").stat().st_size > 1000
    img = ds.images[ds.train[0]["image"]]
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8


def test_records_are_llava_format_and_answers_match_the_watch(tmp_path):
    ds = load_dataset(make_dataset(tiny(), tmp_path / "d", progress=False))
    for rec in ds.train + ds.test:
        convs = rec["conversations"]
        assert [t["from"] for t in convs] == ["human", "gpt"] * (len(convs) // 2)
        if rec["task"] == "generation":
            assert convs[1]["value"].endswith("<image>") and "<image>" not in convs[0]["value"]
        else:
            assert convs[0]["value"].startswith("<image>\n")
    vqa = [r for r in ds.train if r["task"] == "vqa"]
    turns = [len(r["conversations"]) // 2 for r in vqa]
    assert min(turns) == 1 and max(turns) > 1
    time_answers = [
        (t["value"], r["watch"])
        for r in vqa
        for q, t in zip(r["conversations"][::2], r["conversations"][1::2], strict=False)
        if q["attribute"] == "time"
    ]
    for value, w in time_answers:
        assert value == f"{w['hour']:02d}:{w['minute']:02d}:{w['second']:02d}"


def test_vqa_turns_all_asks_every_attribute_once_in_training_and_leaves_test_as_the_paper(tmp_path):
    paper = load_dataset(make_dataset(tiny(), tmp_path / "p", progress=False))
    dense = load_dataset(make_dataset(tiny(vqa_turns="all"), tmp_path / "d", progress=False))
    orders = set()
    for rec in dense.train:
        if rec["task"] != "vqa":
            continue
        asked = [t["attribute"] for t in rec["conversations"][::2]]
        assert sorted(asked) == sorted(["weather", "time", "battery", "weather_pos", "battery_pos"])
        w = rec["watch"]
        written = {"time": f"{w['hour']:02d}:{w['minute']:02d}:{w['second']:02d}", "battery": f"{w['battery']}%"}
        for q, a in zip(rec["conversations"][::2], rec["conversations"][1::2], strict=True):
            assert a["value"] == written.get(q["attribute"], w.get(q["attribute"]))
        orders.add(tuple(asked))
    assert len(orders) > 10  # the order is drawn per record, so no answer sits at a fixed distance from the image
    # the images, the test records, captions and generation prompts do not depend on the training layout
    for name in ("images.npy", "test.jsonl"):
        assert (paper.folder / name).read_bytes() == (dense.folder / name).read_bytes(), name
    assert [r for r in paper.train if r["task"] != "vqa"] == [r for r in dense.train if r["task"] != "vqa"]


def test_vqa_attributes_keeps_only_the_named_questions_in_training(tmp_path):
    dense = load_dataset(make_dataset(tiny(vqa_turns="all"), tmp_path / "d", progress=False))
    focused = load_dataset(
        make_dataset(tiny(vqa_turns="all", vqa_attributes=["time", "weather"]), tmp_path / "f", progress=False)
    )
    vqa = [r for r in focused.train if r["task"] == "vqa"]
    assert len(vqa) == len([r for r in dense.train if r["task"] == "vqa"])
    orders = set()
    for rec in vqa:
        asked = [t["attribute"] for t in rec["conversations"][::2]]
        assert sorted(asked) == ["time", "weather"]
        assert rec["conversations"][0]["value"].startswith("<image>\n")
        assert all("<image>" not in t["value"] for t in rec["conversations"][1:])
        orders.add(tuple(asked))
    assert len(orders) == 2
    assert (dense.folder / "test.jsonl").read_bytes() == (focused.folder / "test.jsonl").read_bytes()


def test_vqa_repeat_asks_one_attribute_again_later_with_the_same_answer(tmp_path):
    dense = load_dataset(make_dataset(tiny(vqa_turns="all"), tmp_path / "d", progress=False))
    repeat = load_dataset(make_dataset(tiny(vqa_turns="all", vqa_repeat=0.5), tmp_path / "r", progress=False))
    vqa = [r for r in repeat.train if r["task"] == "vqa"]
    repeated, gaps = 0, set()
    for rec in vqa:
        asked = [t["attribute"] for t in rec["conversations"][::2]]
        answers = [t["value"] for t in rec["conversations"][1::2]]
        assert set(asked) == {"weather", "time", "battery", "weather_pos", "battery_pos"}
        assert rec["conversations"][0]["value"].startswith("<image>\n")
        assert all("<image>" not in t["value"] for t in rec["conversations"][1:])
        if len(asked) == 6:
            again = next(a for a in set(asked) if asked.count(a) == 2)
            first, second = (i for i, a in enumerate(asked) if a == again)
            assert answers[first] == answers[second]
            gaps.add(second - first)
            repeated += 1
        else:
            assert len(asked) == 5
    assert 0.3 < repeated / len(vqa) < 0.7 and len(gaps) > 2  # about half, at varying distances
    assert len(vqa) == len([r for r in dense.train if r["task"] == "vqa"])
    assert (dense.folder / "test.jsonl").read_bytes() == (repeat.folder / "test.jsonl").read_bytes()
    assert [r for r in dense.train if r["task"] != "vqa"] == [r for r in repeat.train if r["task"] != "vqa"]


def test_extra_vqa_records_add_focused_questions_and_leave_every_other_record_unchanged(tmp_path):
    dense = load_dataset(make_dataset(tiny(vqa_turns="all"), tmp_path / "d", progress=False))
    extra = load_dataset(
        make_dataset(
            tiny(vqa_turns="all", extra_vqa_attributes=["time"], extra_vqa_per_image=2), tmp_path / "e", progress=False
        )
    )
    added = [r for r in extra.train if "_vqa_extra" in r["id"]]
    assert [r for r in extra.train if "_vqa_extra" not in r["id"]] == dense.train
    images_with_vqa = {r["image"] for r in dense.train if r["task"] == "vqa"}
    assert len(added) == 2 * len(images_with_vqa) and {r["image"] for r in added} == images_with_vqa
    for rec in added:
        human, gpt = rec["conversations"]
        assert rec["task"] == "vqa" and human["attribute"] == "time" and human["value"].startswith("<image>\n")
        w = rec["watch"]
        assert gpt["value"] == f"{w['hour']:02d}:{w['minute']:02d}:{w['second']:02d}"
    assert len({r["conversations"][0]["value"] for r in added}) > 1  # the question is paraphrased
    assert (dense.folder / "test.jsonl").read_bytes() == (extra.folder / "test.jsonl").read_bytes()
    assert extra.manifest["counts"]["train_records"]["vqa"] == 3 * len(images_with_vqa)


def test_llava_json_reads_through_the_same_reader(tmp_path):
    rows = [
        {
            "id": "a",
            "image": "x.png",
            "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "sunny"}],
        },
        {"id": "b", "conversations": [{"from": "human", "value": "Draw a watch"}, {"from": "gpt", "value": "<image>"}]},
    ]
    (tmp_path / "llava.json").write_text(json.dumps(rows))
    got = read_records(tmp_path / "llava.json")
    assert [r["task"] for r in got] == ["vqa", "generation"]


def test_weather_transfer_split_frequencies(tmp_path):
    cfg = tiny(n_images=300, share_images=False, und_frequencies={"weather": {"sunny": 1.0, "cloudy": 0, "raining": 0}})
    ds = load_dataset(make_dataset(cfg, tmp_path / "t", progress=False))
    h = ds.manifest["histograms"]
    assert h["understanding"]["weather"] == {"sunny": 300, "cloudy": 0, "raining": 0}
    for role, n in (("generation", 300), ("test", 30)):
        counts = h[role]["weather"]
        assert sum(counts.values()) == n and min(counts.values()) > 0.2 * n  # uniform, not the biased one
    und_images = {r["image"] for r in ds.train if r["task"] in ("vqa", "caption")}
    gen_images = {r["image"] for r in ds.train if r["task"] == "generation"}
    assert not und_images & gen_images
    assert all(r["watch"]["weather"] == "sunny" for r in ds.train if r["task"] != "generation")


def test_battery_range_split_frequencies(tmp_path):
    cfg = tiny(n_images=200, share_images=False, und_frequencies={"battery": {"0-49": 0.75, "50-100": 0.25}})
    ds = load_dataset(make_dataset(cfg, tmp_path / "b", progress=False))
    und = [r["watch"]["battery"] for r in ds.train if r["task"] == "vqa"]
    low = np.mean([b < 50 for b in und])
    assert 0.65 < low < 0.85
    gen = [r["watch"]["battery"] for r in ds.train if r["task"] == "generation"]
    assert 0.35 < np.mean([b < 50 for b in gen]) < 0.65


def test_ratio_disjoint_and_arms(tmp_path):
    cfg = tiny(n_images=40, extra_gen_images=20, extra_und_images=10)
    ds = load_dataset(make_dataset(cfg, tmp_path / "r", progress=False))
    counts = ds.manifest["counts"]
    assert counts["images"] == {"shared": 40, "extra_gen": 20, "extra_und": 10, "test": 30}
    assert counts["train_records"] == {"vqa": 50, "caption": 50, "generation": 60}
    mixed = select_arm(ds.train, ArmConfig("mixed"))
    und = select_arm(ds.train, ArmConfig("und-only"))
    gen = select_arm(ds.train, ArmConfig("gen-only"))
    assert len(mixed) == 160 and len(und) == 100 and len(gen) == 60
    assert {r["task"] for r in und} == {"vqa", "caption"} and {r["task"] for r in gen} == {"generation"}
    matched = select_arm(ds.train, ArmConfig("gen-only", step_matched=True, seed=1))
    assert len(matched) == len(mixed)
    uses = np.bincount([int(r["image"].split("_")[1]) for r in matched])
    uses = uses[uses > 0]
    assert uses.min() >= 2 and uses.max() <= 3  # 160 / 60: every record two or three times, none favoured


def test_repeats_weight_the_mixture_per_task(tmp_path):
    ds = load_dataset(make_dataset(tiny(n_images=40), tmp_path / "r", progress=False))
    base = Counter(r["task"] for r in select_arm(ds.train, ArmConfig("mixed")))
    heavy = select_arm(ds.train, ArmConfig("mixed", repeats={"generation": 3, "vqa": 2}))
    assert Counter(r["task"] for r in heavy) == {
        "vqa": 2 * base["vqa"],
        "caption": base["caption"],
        "generation": 3 * base["generation"],
    }
    # every generation record three times, none favoured
    assert set(Counter(id(r) for r in heavy if r["task"] == "generation").values()) == {3}
    # the step-matched control matches the weighted mixed arm
    matched = select_arm(ds.train, ArmConfig("gen-only", step_matched=True, repeats={"generation": 3, "vqa": 2}))
    assert len(matched) == len(heavy)
    for bad, message in (
        ({"captions": 2}, "unknown task 'captions'"),
        ({"vqa": 0}, "at least 1"),
        ({"vqa": 1.5}, "whole number"),
    ):
        with pytest.raises(UnilensError, match=message):
            select_arm(ds.train, ArmConfig("mixed", repeats=bad))


def test_disjoint_pools_share_no_image(tmp_path):
    ds = load_dataset(make_dataset(tiny(share_images=False), tmp_path / "d", progress=False))
    und = {r["image"] for r in ds.train if r["task"] == "vqa"}
    gen = {r["image"] for r in ds.train if r["task"] == "generation"}
    assert len(und) == len(gen) == 60 and not und & gen


def test_textures_and_coloured_hands_option(tmp_path):
    cfg = tiny(nuisance=Nuisance(textures={"mesh": 0.5, "noise": 0.5}, colored_hands=True))
    ds = load_dataset(make_dataset(cfg, tmp_path / "n", progress=False))
    textures = {r["watch"]["texture"] for r in ds.train}
    assert textures == {"mesh", "noise"}
    assert any(tuple(r["watch"]["hand_color"]) != (255, 255, 255) for r in ds.train)


def write_config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


BAD_CONFIGS = {
    "unknown attribute": (
        "n_images: 10\nund_frequencies: {colour: {red: 1.0}}\nshare_images: false\n",
        "unknown attribute",
    ),
    "sum not one": (
        "n_images: 10\nund_frequencies: {weather: {sunny: 0.5, cloudy: 0.2}}\nshare_images: false\n",
        "sum to 1",
    ),
    "unknown key": ("n_imagez: 10\n", "unknown key"),
    "impossible split": ("n_images: 10\nn_test_images: 5\ncontact_sheet_images: 24\n", "impossible split"),
    "unknown vqa_turns": ("n_images: 10\nvqa_turns: every\n", "vqa_turns"),
    "unknown vqa attribute": ("n_images: 10\nvqa_turns: all\nvqa_attributes: [clock]\n", "vqa_attributes"),
    "vqa attributes on the paper layout": ("n_images: 10\nvqa_attributes: [time]\n", "vqa_turns: all"),
    "vqa repeat on the paper layout": ("n_images: 10\nvqa_repeat: 0.2\n", "vqa_turns: all"),
    "vqa repeat above one": ("n_images: 10\nvqa_turns: all\nvqa_repeat: 1.5\n", "vqa_repeat"),
    "unknown extra vqa attribute": ("n_images: 10\nextra_vqa_attributes: [clock]\nextra_vqa_per_image: 1\n", "clock"),
    "extra vqa without a count": ("n_images: 10\nextra_vqa_attributes: [time]\n", "extra_vqa_per_image"),
    "shared but biased": ("n_images: 10\nund_frequencies: {weather: {sunny: 1.0}}\n", "share_images: false"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configs_fail_with_one_clear_line_and_write_nothing(tmp_path, capsys, case):
    text, needle = BAD_CONFIGS[case]
    cfg = write_config(tmp_path / "bad.yaml", "image_size: 32\n" + text)
    assert main(["data", "make", cfg, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_missing_parent_and_existing_folder(tmp_path, capsys):
    cfg = write_config(tmp_path / "ok.yaml", "image_size: 32\nn_images: 8\nn_test_images: 6\ncontact_sheet_images: 2\n")
    assert main(["data", "make", cfg, "--out", str(tmp_path / "no" / "such" / "out"), "--quiet"]) == 2
    assert "parent does not exist" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["data", "make", cfg, "--out", str(out), "--quiet"]) == 0
    before = (out / "manifest.json").read_text()
    assert main(["data", "make", cfg, "--out", str(out), "--quiet", "--seed", "9"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == before
    assert main(["data", "make", cfg, "--out", str(out), "--quiet", "--seed", "9", "--overwrite"]) == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.yaml", "out"]


def test_missing_config_file(tmp_path, capsys):
    assert main(["data", "make", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_crash_midway_leaves_no_half_written_dataset(tmp_path, monkeypatch):
    import tasks.dataset as dataset_module

    calls = {"n": 0}
    real = dataset_module.render_array

    def flaky(watch, size):
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("simulated crash")
        return real(watch, size)

    monkeypatch.setattr(dataset_module, "render_array", flaky)
    with pytest.raises(RuntimeError):
        make_dataset(tiny(), tmp_path / "crash", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_frequency_validation_messages():
    from tasks.world import expand_frequencies

    with pytest.raises(UnilensError, match="not a value of 'weather'"):
        expand_frequencies("weather", {"snowy": 1.0})
    with pytest.raises(UnilensError, match="outside"):
        expand_frequencies("battery", {"50-120": 1.0})
    probs = expand_frequencies("battery", {"0-49": 1.0})
    assert abs(sum(probs.values()) - 1) < 1e-9 and probs[50] == 0 and probs[0] == pytest.approx(1 / 50)
