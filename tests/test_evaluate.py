"""Decoding with and without the KV cache, the attribute reader, and `unilens eval` end to end."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.build import build_model, build_spaces
from models.evaluate import GRID_HEADER, EvalConfig, Evaluator, asked_before, checkpoints_of, run_eval, summary_table
from models.fingerprint import DEPENDENCY_OF_PART
from models.generate import collate_prompts, generate_image_tokens, generation_prompt, greedy_answers, question_prompts
from models.presets import FreezeConfig
from models.reader import ReaderConfig, load_reader, train_reader
from models.sequence import Encoder
from tasks.records import load_dataset
from unilens.errors import UnilensError


@pytest.mark.parametrize("variant", ["vq-vq", "sem-sem"])
def test_kv_cache_decoding_equals_recomputing(trained_runs, variant):
    from conftest import reload_run

    built, dataset, und, gen = reload_run(trained_runs[variant])
    enc = Encoder(built.tokenizer, und.num_tokens)
    vqa = [r for r in dataset.test if r["task"] == "vqa"][:6]
    prompts = [question_prompts(enc, r)[0][0] for r in vqa]
    batch = collate_prompts(prompts, und, gen, enc.pad_id)
    eos = built.tokenizer.eos_token_id
    cached = greedy_answers(built.model, batch, eos, max_new_tokens=8, use_cache=True)
    fresh = greedy_answers(built.model, batch, eos, max_new_tokens=8, use_cache=False)
    assert cached == fresh and any(cached)
    gens = [generation_prompt(enc, r) for r in dataset.test if r["task"] == "generation"][:4]
    gbatch = collate_prompts(gens, und, gen, enc.pad_id)
    a = generate_image_tokens(built.model, gbatch, gen.num_tokens, gen, use_cache=True)
    b = generate_image_tokens(built.model, gbatch, gen.num_tokens, gen, use_cache=False)
    if variant == "vq-vq":
        assert a.dtype == torch.long and torch.equal(a, b)
    else:
        assert a.shape == (4, gen.num_tokens, gen.dim) and torch.allclose(a, b, atol=1e-4)
        # every generated token carries a target's norm in the head's space, whatever norm the head drifted to
        norms = built.model.gen_target(a).norm(dim=-1)
        assert built.model.target_norm() == pytest.approx(gen.dim**0.5)
        assert torch.allclose(norms, torch.full_like(norms, gen.dim**0.5), rtol=1e-3)


def test_left_padding_does_not_change_answers(trained_runs):
    """A prompt decoded alone and in a batch beside longer prompts gives the same tokens."""
    cfg = trained_runs["vq-vq"]
    built = build_model(cfg.model, FreezeConfig("adapters"), seed=1)
    dataset = load_dataset(cfg.dataset)
    und, gen = build_spaces(built, cfg.model, dataset, cfg.cache_dir)
    enc = Encoder(built.tokenizer, und.num_tokens)
    prompts = [p for r in dataset.test if r["task"] == "vqa" for p, _, _ in question_prompts(enc, r)][:6]
    eos = built.tokenizer.eos_token_id
    together = greedy_answers(built.model.eval(), collate_prompts(prompts, und, gen, enc.pad_id), eos, 6)
    alone = [greedy_answers(built.model, collate_prompts([p], und, gen, enc.pad_id), eos, 6)[0] for p in prompts]
    assert len({len(p) for p in prompts}) > 1
    assert together == alone


def test_reader_reads_ground_truth_above_floor(tiny_embedded, tmp_path):
    dataset = load_dataset(tiny_embedded / "data")
    report = train_reader(
        ReaderConfig(image_size=32, steps=300, batch_size=32), dataset, tmp_path / "r", progress=False
    )
    acc = report["test_accuracy"]
    # chance: weather 1/3, corners 1/4; floors are far above chance even at 32 px and 48 training images
    assert acc["weather"] >= 0.6 and acc["weather_pos"] >= 0.6 and acc["battery_pos"] >= 0.6, acc
    reader = load_reader(tmp_path / "r")
    images = dataset.images.array[:4]
    assert set(reader.read(images)) == {"weather", "weather_pos", "battery_pos", "battery_decile", "hour", "minute5"}


@pytest.fixture(scope="module")
def tiny_reader(tiny_embedded, tmp_path_factory) -> Path:
    """An attribute reader of the tiny world (30 steps), trained once for the tests that only use it."""
    folder = tmp_path_factory.mktemp("reader") / "reader"
    train_reader(ReaderConfig(image_size=32, steps=30), load_dataset(tiny_embedded / "data"), folder, progress=False)
    return folder


def test_eval_writes_tidy_tables_and_grid(trained_runs, tiny_reader, tmp_path):
    cfg = trained_runs["vq-vq"]
    summary = run_eval(
        cfg.out,
        tmp_path / "eval",
        EvalConfig(limit=4, n_boot=50, max_caption_tokens=24),
        str(tiny_reader),
        which="all",
        log=lambda *_: None,
    )
    assert set(summary["checkpoint"]) == {c.name for c in checkpoints_of(cfg.out, "all")}
    assert summary.attrs["folder"] == tmp_path / "eval"  # where the CLI draws scores.png
    assert {"vqa", "vqa_first_turn", "vqa_later_turns", "caption", "generation", "image_gap"} <= set(summary["task"])
    assert {"task", "attribute", "value", "metric", "mean", "lo", "hi", "n", "variant", "preset", "mixture"} <= set(
        summary.columns
    )
    ok = summary.dropna(subset=["mean"])
    assert ((ok["lo"] <= ok["mean"] + 1e-9) & (ok["mean"] <= ok["hi"] + 1e-9)).all()
    vqa = pd.read_csv(tmp_path / "eval" / "vqa.csv")
    assert vqa["turn"].max() >= 1  # every turn is scored, not only the first
    # the hour is summarised for time answers and for nothing else
    hours = summary[summary["metric"] == "hour"]
    assert set(hours["attribute"]) == ({"time"} if (vqa["attribute"] == "time").any() else set())
    assert hours["mean"].notna().all()
    assert (tmp_path / "eval" / f"grid_{checkpoints_of(cfg.out)[0].name}.png").stat().st_size > 1000
    # every row names the build its checkpoint was trained on, in the hashes `unilens embedded build` records
    build = json.loads((Path(cfg.model.llm).parent / "build.json").read_text())
    label = summary["build"].unique()
    assert len(label) == 1
    for part in ("lm", "vq", "data"):
        assert f"{DEPENDENCY_OF_PART[part]}:{build['parts'][part]['hash'][:12]}" in label[0]
    assert "semantic_encoder" not in label[0]  # a vq-vq model does not depend on it


def test_summary_splits_first_and_later_turns():
    """Hand-made multiple-choice scores: every first-turn question answered right, every later one wrong."""
    rows = []
    for image in ("a", "b", "c"):
        for turn, right in ((0, True), (1, False), (2, False)):
            for candidate in ("top-left", "top-right"):
                good = (candidate == "top-left") == right
                rows.append(
                    {
                        "image": image,
                        "attribute": "weather_pos",
                        "turn": turn,
                        "value": "top-left",
                        "candidate": candidate,
                        "logp": -1.0 if good else -3.0,
                    }
                )
    empty = pd.DataFrame()
    summary = summary_table(empty, empty, empty, n_boot=50, choices=pd.DataFrame(rows))
    overall = summary[(summary["value"] == "all") & (summary["metric"] == "choice")].set_index("task")
    assert overall.loc["vqa_choice_first_turn", "mean"] == 1.0 and overall.loc["vqa_choice_first_turn", "n"] == 3
    assert overall.loc["vqa_choice_later_turns", "mean"] == 0.0 and overall.loc["vqa_choice_later_turns", "n"] == 6
    assert overall.loc["vqa_choice", "mean"] == pytest.approx(1 / 3)


def test_summary_splits_repeated_questions():
    """Hand-made greedy answers: image "a" asks the battery's corner twice (turns 0 and 2, the repeat answered
    wrong), image "b" asks it once at turn 1 (right). Repeated questions are scored apart from the rest; an image
    without a repeat adds no split."""
    rows = [
        {"image": "a", "attribute": "battery_pos", "turn": 0, "exact": 1.0, "soft": 1.0},
        {"image": "a", "attribute": "weather", "turn": 1, "exact": 1.0, "soft": 1.0},
        {"image": "a", "attribute": "battery_pos", "turn": 2, "exact": 0.0, "soft": 0.0},
        {"image": "b", "attribute": "weather", "turn": 0, "exact": 1.0, "soft": 1.0},
        {"image": "b", "attribute": "battery_pos", "turn": 1, "exact": 1.0, "soft": 1.0},
    ]
    vqa = pd.DataFrame(rows).assign(value="x", hour=float("nan"))
    assert asked_before(vqa).tolist() == [False, False, True, False, False]
    empty = pd.DataFrame()
    summary = summary_table(vqa, empty, empty, n_boot=50)
    exact = summary[(summary["value"] == "all") & (summary["metric"] == "exact")].set_index(["task", "attribute"])
    assert exact.loc[("vqa_repeated_questions", "battery_pos"), ["mean", "n"]].tolist() == [0.0, 1]
    assert exact.loc[("vqa_new_questions", "battery_pos"), ["mean", "n"]].tolist() == [1.0, 2]
    assert exact.loc[("vqa_later_turns", "battery_pos"), "mean"] == 0.5
    assert ("vqa_repeated_questions", "weather") not in exact.index
    once = summary_table(vqa[vqa["turn"] < 2], empty, empty, n_boot=50)
    assert not once["task"].str.contains("repeated|new_questions").any()


def test_eval_bad_target(tmp_path):
    with pytest.raises(UnilensError, match="neither a checkpoint nor a run folder"):
        checkpoints_of(tmp_path)


def test_checkpoints_chosen_by_fraction_of_training(trained_runs):
    run = trained_runs["vq-vq"].out  # saved at fractions 0.5 and 1.0
    every = checkpoints_of(run, "all")
    assert checkpoints_of(run, "fractions:0.5") == every[:1]
    assert checkpoints_of(run, "fractions:1,0.5") == every
    with pytest.raises(UnilensError, match="asked for fractions"):
        checkpoints_of(run, "fractions:0.25")
    with pytest.raises(UnilensError, match="cannot read"):
        checkpoints_of(run, "fractions:half")


def test_checkpoints_chosen_by_step_with_last_among_them(trained_runs):
    run = trained_runs["vq-vq"].out
    every = checkpoints_of(run, "all")
    first = int(every[0].name.split("-")[1])
    assert checkpoints_of(run, f"{first},last") == every
    assert checkpoints_of(run, "last") == every[-1:]
    with pytest.raises(UnilensError, match="steps such as 312,last"):
        checkpoints_of(run, f"{first},end")
    with pytest.raises(UnilensError, match="asked for steps"):
        checkpoints_of(run, "7")


def test_semantic_generation_scored_by_cosine_and_probes(trained_runs):
    from models.build import load_checkpoint
    from models.evaluate import FeatureProbes

    cfg = trained_runs["sem-sem"]
    built, _ = load_checkpoint(checkpoints_of(cfg.out)[0])
    dataset = load_dataset(cfg.dataset)
    ev = Evaluator(built, dataset, cfg.cache_dir, EvalConfig(limit=4))
    probes = FeatureProbes(ev.gen_space, dataset)
    assert probes.accuracy(ev.gen_space, dataset)["weather_pos"] > 0.4  # ground-truth features are readable
    gen, generated = ev.generation(None, probes)
    assert gen["cosine"].between(-1, 1).all() and gen["correct"].isin([0.0, 1.0]).all()
    assert generated["pixels"] is None


def test_feature_probes_equal_one_ridge_classifier_per_attribute():
    """FeatureProbes fits every attribute in one ridge solve; its predictions are those of a RidgeClassifier per
    attribute (same alpha, same standardised float64 features), on held-out and on noisy features."""
    from types import SimpleNamespace

    from sklearn.linear_model import RidgeClassifier

    from models.evaluate import FeatureProbes
    from models.reader import labels_of
    from tasks.world import Watch, sample_watch

    rng = np.random.default_rng(0)
    watches = [sample_watch(rng) for _ in range(120)]
    codes = rng.normal(size=(6, 12, 8))  # each attribute writes its label times its own direction into the features
    feats = {
        i: torch.tensor(
            sum(v * codes[k] for k, v in enumerate(labels_of(w).values())) + rng.normal(size=(12, 8)),
            dtype=torch.float32,
        )
        for i, w in enumerate(watches)
    }
    space = SimpleNamespace(inputs=lambda i: feats[i])
    records = [{"image": i, "watch": w.to_dict()} for i, w in enumerate(watches)]
    dataset = SimpleNamespace(train=records[:90], test=records[90:])
    probes = FeatureProbes(space, dataset)
    x = np.stack([feats[r["image"]].numpy() for r in records[90:]])
    x = x + rng.normal(size=x.shape) * x.std()
    ours = probes.predict(x)
    train_x = np.stack([feats[r["image"]].numpy().reshape(-1) for r in records[:90]]).astype(np.float64)
    for head, predicted in ours.items():
        labels = [labels_of(Watch.from_dict(r["watch"]))[head] for r in records[:90]]
        reference = RidgeClassifier(alpha=10.0).fit((train_x - probes.mean) / probes.std, labels)
        expected = reference.predict((x.reshape(len(x), -1) - probes.mean) / probes.std)
        assert (predicted == expected).all(), head
    assert probes.accuracy(space, dataset)["weather"] > 0.9


def test_image_reliance_swaps_images_and_is_blind_to_a_blind_model(loaded_vq_run, trained_runs):
    """Swapping images changes a seeing model's answer losses; a model whose adapter outputs a constant cannot tell."""
    built, dataset, _und, _gen = loaded_vq_run
    ev = Evaluator(built, dataset, trained_runs["vq-vq"].cache_dir, EvalConfig(limit=8, batch_size=4))
    table = ev.image_reliance()
    true, swapped = (table[table.condition == c].reset_index(drop=True) for c in ("true", "swapped"))
    assert len(true) == len(swapped) > 0 and set(table.attribute) <= {
        "weather",
        "weather_pos",
        "battery_pos",
        "battery",
        "time",
    }
    assert not torch.allclose(torch.tensor(true.answer_nll.values), torch.tensor(swapped.answer_nll.values))
    net = built.model.vision_in.net
    last = net if isinstance(net, torch.nn.Linear) else net[-1]
    saved = last.weight.detach().clone()
    try:
        with torch.no_grad():
            last.weight.zero_()
        blind = ev.image_reliance()
    finally:
        with torch.no_grad():
            last.weight.copy_(saved)
    b_true, b_swapped = (blind[blind.condition == c].answer_nll.values for c in ("true", "swapped"))
    assert torch.allclose(torch.tensor(b_true), torch.tensor(b_swapped), atol=1e-5)


def test_choice_scores_match_teacher_forced_answers_and_restrict(loaded_vq_run, trained_runs):
    """Each candidate's log-probability equals the teacher-forced answer loss when the candidate is the truth."""
    from models.evaluate import choice_predictions
    from tasks.world import ATTRIBUTE_VALUES

    built, dataset, _und, _gen = loaded_vq_run
    ev = Evaluator(built, dataset, trained_runs["vq-vq"].cache_dir, EvalConfig(limit=10, batch_size=8))
    choices = ev.choices()
    assert len(choices) and (choices["logp"] < 0).all()
    per_question = choices.groupby(["image", "attribute", "turn"])["candidate"].nunique()
    for (_img, attribute, _turn), n in per_question.items():
        assert n == len(ATTRIBUTE_VALUES[attribute])
    truth = choices[choices["candidate"] == choices["value"]]
    reliance = ev.image_reliance()
    merged = truth.merge(reliance[reliance["condition"] == "true"], on=["image", "attribute", "turn"])
    assert len(merged) == len(truth)
    assert torch.allclose(torch.tensor(merged["logp"].values), -torch.tensor(merged["answer_nll"].values), atol=1e-3)
    picked = choice_predictions(choices)
    assert len(picked) == len(per_question) and set(picked["choice"]) <= {0.0, 1.0}
    # a checkpoint series: each checkpoint answers every question once (a later one must not absorb an earlier one)
    series = pd.concat([choices.assign(checkpoint="a"), choices.assign(checkpoint="b", logp=choices["logp"] * 2)])
    both = choice_predictions(series)
    assert both.groupby("checkpoint").size().to_dict() == {"a": len(per_question), "b": len(per_question)}
    only = choice_predictions(choices, among={"weather": ["cloudy", "raining"]})
    w = only[only["attribute"] == "weather"]
    assert set(w["candidate"]) <= {"cloudy", "raining"} and set(w["value"]) <= {"cloudy", "raining"}


def test_span_scores_equal_scoring_every_position(loaded_vq_run, trained_runs):
    """Scoring only the spans' positions gives what the log-probabilities of the whole batch give."""
    from models.evaluate import span_scores
    from models.sequence import collate

    built, dataset, und, gen = loaded_vq_run
    enc = Encoder(built.tokenizer, und.num_tokens)
    seqs = [enc.record(r) for r in dataset.test if r["task"] == "vqa"][:5]
    batch = collate(seqs, und, gen, enc.pad_id)
    spans = [(j, start, end) for j, s in enumerate(seqs) for start, end, _ in s.answers]
    with torch.no_grad():
        hidden = built.model.eval().hidden(batch)
        logp = built.model.text_logits(hidden).float().log_softmax(-1)
    # the toy model answers no span exactly: make the first span's labels its own argmax, so that one span is
    row, start, end = spans[0]
    batch.labels[row, start - 1 : end - 1] = logp[row, start - 1 : end - 1].argmax(-1)
    expected = []
    for row, start, end in spans:
        lab, lp = batch.labels[row, start - 1 : end - 1], logp[row, start - 1 : end - 1]
        expected.append((float(lp.gather(1, lab[:, None]).sum()), float((lp.argmax(-1) == lab).all())))
    got = span_scores(built.model, hidden, batch.labels, spans)
    assert len(spans) > len(seqs) and [e for _, e in got] == [e for _, e in expected]
    assert {e for _, e in got} == {0.0, 1.0}
    assert np.allclose([g for g, _ in got], [e for e, _ in expected], atol=1e-5)
    assert span_scores(built.model, hidden, batch.labels, []) == []


def test_frechet_distance_is_zero_for_one_set_and_the_squared_shift_for_a_moved_one():
    import numpy as np

    from models.fid import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 4))
    assert abs(frechet_distance(a, a)) < 1e-6
    shift = np.array([1.0, -2.0, 0.0, 0.5])
    assert abs(frechet_distance(a, a + shift) - (shift**2).sum()) < 1e-6  # same covariance, moved mean
    b = rng.normal(size=(4000, 4)) * 2.0  # covariance 4I against I: trace term (1 + 4 - 2*2) per dimension
    assert abs(frechet_distance(a, b) - 4.0) < 0.3


def test_eval_reports_fid_with_a_local_torchscript_network(trained_runs, tmp_path):
    class Features(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) / 255.0

    net = tmp_path / "inception.pt"
    torch.jit.script(Features()).save(str(net))
    run = trained_runs["vq-vq"].out
    summary = run_eval(
        run,
        tmp_path / "eval",
        EvalConfig(limit=6, captions=False, n_boot=20, fid_weights=str(net)),
        None,
        log=lambda *_: None,
    )
    row = summary[summary["metric"] == "fid"]
    assert len(row) == 1 and np.isfinite(row["mean"].iloc[0]) and row["mean"].iloc[0] > 0
    with pytest.raises(UnilensError, match="FID weights not found"):
        run_eval(
            run,
            tmp_path / "eval2",
            EvalConfig(limit=6, captions=False, fid_weights=str(tmp_path / "no.pt")),
            None,
            log=lambda *_: None,
        )


def test_semantic_generations_are_shown_by_their_nearest_training_image_and_their_reading(trained_runs, tmp_path):
    from models.build import load_checkpoint

    cfg = trained_runs["sem-sem"]
    built, _ = load_checkpoint(checkpoints_of(cfg.out)[0])
    dataset = load_dataset(cfg.dataset)
    ev = Evaluator(built, dataset, cfg.cache_dir, EvalConfig(limit=4))
    ids = sorted({r["image"] for r in dataset.train})[3:6]
    own = torch.stack([ev.gen_space.targets(i) for i in ids])
    assert ev.nearest_training_images(own) == ids
    _, generated = ev.generation(None, None)
    ev.grid(generated, tmp_path / "grid.png", 4)
    from PIL import Image

    sheet = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    cell, size = max(dataset.image_size, 160), dataset.image_size
    nearest = ev.nearest_training_images(generated["tokens"][:4])
    assert sheet.shape[1] == 3 * cell
    for i, image_id in enumerate(nearest):
        y = GRID_HEADER + i * (size + 4)
        assert np.array_equal(sheet[y : y + size, 2 * cell : 2 * cell + size], dataset.images[image_id])
    # with the feature probes, a fourth column draws the watch they read from each generation
    from models.evaluate import FeatureProbes, watch_from_reading
    from models.reader import labels_of
    from tasks.render import render_array

    _, generated = ev.generation(None, FeatureProbes(ev.gen_space, dataset))
    ev.grid(generated, tmp_path / "grid-read.png", 4)
    sheet = np.asarray(Image.open(tmp_path / "grid-read.png").convert("RGB"))
    assert sheet.shape[1] == 4 * cell
    read = generated["read"]
    for i in range(4):
        y = GRID_HEADER + i * (size + 4)
        drawn = render_array(watch_from_reading(read, i), size)
        assert np.array_equal(sheet[y : y + size, 3 * cell : 3 * cell + size], drawn)
        assert labels_of(watch_from_reading(read, i)) == {head: int(values[i]) for head, values in read.items()}


def test_train_split_scores_training_images_into_its_own_folder(trained_runs, tmp_path):
    cfg = trained_runs["vq-vq"]
    dataset = load_dataset(cfg.dataset)
    train_ids = {r["image"] for r in dataset.train}
    test_ids = {r["image"] for r in dataset.test}
    run = tmp_path / "run"
    import shutil

    shutil.copytree(cfg.out, run)
    eval_cfg = EvalConfig(limit=3, captions=False, generation=False, n_boot=20, split="train")
    summary = run_eval(run, None, eval_cfg, None)
    vqa = pd.read_csv(run / "eval_train" / "vqa.csv")
    assert set(vqa["image"]) <= train_ids and not set(vqa["image"]) & test_ids
    assert len(set(vqa["image"])) == 3 and (summary["split"] == "train").all()
    assert summary.attrs["folder"] == run / "eval_train"
    assert not (run / "eval").exists()  # the test scores are never overwritten
    with pytest.raises(UnilensError, match="choose test or train"):
        run_eval(run, None, EvalConfig(split="val"), None)


def test_a_training_split_with_extra_records_is_scored_one_conversation_per_image(tmp_path):
    """Extra one-question records of an image are not scored as more turns of its conversation."""
    from models.evaluate import _scored_records
    from tasks.dataset import DataConfig, make_dataset

    cfg = DataConfig(
        seed=3,
        image_size=32,
        n_images=20,
        n_test_images=6,
        contact_sheet_images=2,
        vqa_turns="all",
        extra_vqa_attributes=["time"],
        extra_vqa_per_image=2,
    )
    dataset = load_dataset(make_dataset(cfg, tmp_path / "d", progress=False))
    every = [r for r in dataset.train if r["task"] == "vqa"]
    scored = _scored_records(dataset, "vqa", 0, "train")
    assert len(every) == 3 * len(scored) and len({r["image"] for r in scored}) == len(scored)
    assert all(len(r["conversations"]) == 10 and "_extra" not in r["id"] for r in scored)  # each image's own record
    assert [r["id"] for r in _scored_records(dataset, "vqa", 0, "test")] == [
        r["id"] for r in dataset.test if r["task"] == "vqa"
    ]
    assert len(_scored_records(dataset, "vqa", 4, "train")) == 4


def test_prompt_reliance_scores_the_training_loss_and_moves_prompts_not_images(loaded_vq_run, trained_runs):
    """Under its own prompt, each image's mean token loss is the training forward's image loss; under another
    record's prompt the same images are scored (the prompts move, the images stay) and the losses change."""
    from models.evaluate import prompt_gain

    built, dataset, und, gen = loaded_vq_run
    ev = Evaluator(built, dataset, trained_runs["vq-vq"].cache_dir, EvalConfig(limit=6, batch_size=4))
    table = ev.prompt_reliance()
    true, swapped = (table[table.condition == c] for c in ("true", "swapped"))
    assert len(true) == len(swapped) == 6 * gen.num_tokens
    assert sorted(set(true.image)) == sorted(set(swapped.image))
    records = [r for r in dataset.test if r["task"] == "generation"][:6]
    enc = Encoder(built.tokenizer, gen.num_tokens)
    from models.sequence import collate

    batch = collate([enc.record(r) for r in records], und, gen, enc.pad_id)
    with torch.no_grad():
        image_loss = built.model.eval()(batch)["image_loss"].item()
    assert true.image_loss.mean() == pytest.approx(image_loss, rel=1e-4)
    per_image = prompt_gain(table)
    assert len(per_image) == 6 and (per_image["gain"] != 0).any()
    assert np.allclose(per_image["gain"], per_image["swapped"] - per_image["true"])
    summary = summary_table(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), 50, prompt=table)
    assert set(summary["metric"]) == {"true", "swapped", "gain"} and set(summary["task"]) == {"prompt_reliance"}


def test_prompt_choices_rescore_the_true_image_under_each_value_of_one_clause(loaded_vq_run, trained_runs):
    """Generation's multiple choice: the true candidate's loss is the image's loss under its own prompt (the
    prompt-reliance 'true' score), every other candidate changes exactly the named clause, and hour 0 is asked as
    '00:' with 12 as its truth among 1..12. A prompt without the clause its record names is refused."""
    import dataclasses

    from models.evaluate import choice_margins, choice_predictions, prompt_gain
    from tasks.world import Watch

    built, dataset, _und, _gen = loaded_vq_run
    records = [r for r in dataset.test if r["task"] == "generation"][:6]
    # one record at hour 0: its prompt says 00:MM:SS, the face is the one 12 draws
    first = records[0]
    watch = dict(first["watch"], hour=0)
    said = first["conversations"][0]["value"]
    true_watch = Watch.from_dict(first["watch"])
    turn = {**first["conversations"][0], "value": said.replace(true_watch.time_str, "00" + true_watch.time_str[2:])}
    records[0] = {**first, "watch": watch, "conversations": [turn, *first["conversations"][1:]]}
    data = dataclasses.replace(dataset, test=records)
    ev = Evaluator(built, data, trained_runs["vq-vq"].cache_dir, EvalConfig(batch_size=8))
    table = ev.prompt_choices(token_losses=True)
    per_token = table[[f"token_{k}" for k in range(_gen.num_tokens)]].to_numpy()
    assert np.allclose(per_token.mean(-1), table["image_loss"])
    sizes = table.groupby(["image", "attribute"])["candidate"].nunique()
    expected = {"weather": 3, "weather_pos": 4, "battery_pos": 4, "hour": 12}
    assert all(n == expected[attribute] for (_image, attribute), n in sizes.items())
    categorical = ("weather", "weather_pos", "battery_pos")
    named = sum(len([a for a in r["conversations"][0]["attributes"] if a in categorical]) + 1 for r in records)
    assert len(sizes) == named  # every named categorical attribute of every prompt, and the hour (always named)
    hour0 = table[(table["image"] == first["image"]) & (table["attribute"] == "hour")]
    assert set(hour0["value"]) == {"12"} and set(hour0["candidate"]) == {str(h) for h in range(1, 13)}
    truth = table[table["candidate"] == table["value"]].groupby("image")["image_loss"].agg(["min", "max"])
    own = prompt_gain(ev.prompt_reliance()).set_index("image")["true"]
    assert np.allclose(truth["min"], own[truth.index], atol=1e-4) and np.allclose(truth["max"], truth["min"])
    hours = table[table["attribute"] == "hour"].groupby("image")["image_loss"]
    assert (hours.max() - hours.min() > 0).all()  # another hour in the prompt moves the loss of the same image
    picked = choice_predictions(table)
    assert len(picked) == len(sizes) and set(picked["choice"]) <= {0.0, 1.0}
    margins = choice_margins(table).set_index(["image", "attribute"])["margin"]
    for (image, attribute), margin in margins.items():
        rows = table[(table["image"] == image) & (table["attribute"] == attribute)]
        wrong = rows[rows["candidate"] != rows["value"]]["image_loss"].mean()
        assert margin == pytest.approx(wrong - rows[rows["candidate"] == rows["value"]]["image_loss"].iloc[0], abs=1e-6)
    summary = summary_table(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), 50, gen_choices=table)
    whole = summary[summary["value"] == "all"].set_index(["attribute", "metric"])["mean"]
    for attribute in expected:
        share = picked[picked["attribute"] == attribute]["choice"].mean()
        assert whole[(attribute, "choice")] == pytest.approx(share)
    assert set(summary["task"]) == {"generation_choice"}
    broken = {**records[1], "conversations": [{**records[1]["conversations"][0], "value": "Draw a smart watch."}]}
    broken["conversations"] += records[1]["conversations"][1:]
    ev = Evaluator(built, dataclasses.replace(dataset, test=[broken]), trained_runs["vq-vq"].cache_dir, EvalConfig())
    with pytest.raises(UnilensError, match="re-render the dataset"):
        ev.prompt_choices()


def test_image_gap_pairs_each_question_with_itself_under_a_swapped_image():
    """Hand-made losses: a model that reads the corner (2 nats dearer with another image) and one that answers the
    weather from priors (same loss whatever the image). The gap is paired per question, so the priors' spread
    across questions (0.1 to 3.0 nats here) does not enter it, and its CI excludes 0 only where the image is used."""
    from models.evaluate import image_gap

    rows = []
    for image in range(40):
        prior = 0.1 + 2.9 * (image % 7) / 6  # each question's own difficulty, shared by both conditions
        for attribute, used in (("weather_pos", 2.0), ("weather", 0.0)):
            for condition, extra in (("true", 0.0), ("swapped", used)):
                rows.append(
                    dict(
                        image=f"im{image}",
                        attribute=attribute,
                        turn=0,
                        condition=condition,
                        answer_nll=prior + extra,
                        exact_tf=1.0,
                    )
                )
    reliance = pd.DataFrame(rows)
    gaps = image_gap(reliance)
    assert len(gaps) == 80
    assert np.allclose(gaps.loc[gaps.attribute == "weather_pos", "gap"], 2.0)
    assert np.allclose(gaps.loc[gaps.attribute == "weather", "gap"], 0.0)
    empty = pd.DataFrame()
    summary = summary_table(empty, empty, empty, n_boot=50, reliance=reliance)
    gap = summary[summary.task == "image_gap"].set_index("attribute")
    assert set(gap.metric) == {"gap"} and set(gap.n) == {40}
    assert gap.loc["weather_pos", "mean"] == pytest.approx(2.0) and gap.loc["weather_pos", "lo"] == pytest.approx(2.0)
    assert gap.loc["weather", "mean"] == pytest.approx(0.0) and gap.loc["weather", "hi"] == pytest.approx(0.0)


@pytest.mark.parametrize("variant", ["vq-vq", "sem-sem"])
def test_classifier_free_guidance_combines_the_two_streams(trained_runs, variant):
    """Guidance 1 is plain decoding; guidance 0 is plain decoding of the attribute-free prompts (the prompt's stream
    is fed but weighs nothing); a guided run decodes the same with and without the KV cache."""
    from conftest import reload_run

    from models.generate import unconditional_prompts

    built, dataset, und, gen = reload_run(trained_runs[variant])
    enc = Encoder(built.tokenizer, gen.num_tokens)
    records = [r for r in dataset.test if r["task"] == "generation"][:4]
    cond = collate_prompts([generation_prompt(enc, r) for r in records], und, gen, enc.pad_id)
    free = collate_prompts(unconditional_prompts(enc, records), und, gen, enc.pad_id)
    model, n = built.model.eval(), gen.num_tokens

    def same(a, b):
        return torch.equal(a, b) if a.dtype == torch.long else torch.allclose(a, b, atol=1e-4)

    plain = generate_image_tokens(model, cond, n, gen)
    assert same(generate_image_tokens(model, cond, n, gen, guidance=1.0, unconditional=free), plain)
    assert same(
        generate_image_tokens(model, cond, n, gen, guidance=0.0, unconditional=free),
        generate_image_tokens(model, free, n, gen),
    )
    guided = generate_image_tokens(model, cond, n, gen, guidance=3.0, unconditional=free)
    assert same(guided, generate_image_tokens(model, cond, n, gen, guidance=3.0, unconditional=free, use_cache=False))
    assert not same(guided, plain)
    with pytest.raises(UnilensError, match="unconditional"):
        generate_image_tokens(model, cond, n, gen, guidance=3.0)


def test_guidance_is_refused_for_a_model_trained_without_prompt_dropout(loaded_vq_run, trained_runs):
    built, dataset, _und, _gen = loaded_vq_run
    ev = Evaluator(built, dataset, trained_runs["vq-vq"].cache_dir, EvalConfig(limit=2, guidance=3.0))
    with pytest.raises(UnilensError, match="gen_prompt_dropout"):
        ev.generation(None)


def test_no_understanding_scores_generation_alone(trained_runs, tmp_path):
    """`unilens eval --no-understanding`: the generation half (prompt reliance, read-back, grid) of a
    generation-only run, without the VQA and caption passes; switching both halves off is refused."""
    from unilens.cli import main

    run = trained_runs["vq-vq"].out
    main(["eval", str(run), "--out", str(tmp_path / "eval"), "--limit", "4", "--no-understanding"])
    written = {p.name for p in (tmp_path / "eval").iterdir()}
    assert {"prompt_reliance.csv", "generation_choices.csv", "generation.csv", "summary.csv", "scores.png"} <= written
    assert not written & {"vqa.csv", "choices.csv", "captions.csv", "image_reliance.csv"}
    tasks = set(pd.read_csv(tmp_path / "eval" / "summary.csv")["task"])
    assert "prompt_reliance" in tasks and not any(t.startswith(("vqa", "caption", "teacher")) for t in tasks)
    with pytest.raises(UnilensError, match="nothing to evaluate"):
        EvalConfig(understanding=False, generation=False)


def test_generation_ceiling_is_the_score_of_the_true_images_tokens(trained_runs, tiny_reader, tmp_path):
    """A generator that emitted each true image's own VQ codes would score exactly the ceiling, row for row; the
    grid gains the tokenizer's reconstruction as a fourth column."""
    from PIL import Image

    from models.build import load_checkpoint

    cfg = trained_runs["vq-vq"]
    dataset = load_dataset(cfg.dataset)
    reader = load_reader(tiny_reader)
    built, _ = load_checkpoint(checkpoints_of(cfg.out)[0])
    ev = Evaluator(built, dataset, cfg.cache_dir, EvalConfig(limit=6))
    table, generated = ev.generation(reader)
    assert set(table["ceiling"]) <= {0.0, 1.0} and set(table["correct"]) <= {0.0, 1.0}
    ev.generate = lambda records: torch.stack([ev.gen_space.targets(r["image"]) for r in records])
    perfect, copied = ev.generation(reader)
    assert (perfect["correct"] == perfect["ceiling"]).all()
    assert (perfect["ceiling"] == table["ceiling"]).all()  # the ceiling does not depend on what was generated
    assert np.array_equal(copied["pixels"], copied["reconstructed"])
    ev.grid(generated, tmp_path / "grid.png", 3)
    sheet = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    cell, size = max(dataset.image_size, 160), dataset.image_size
    assert sheet.shape[1] == 4 * cell
    for i, rec in enumerate(generated["records"][:3]):
        y = GRID_HEADER + i * (size + 4)
        shown = (dataset.images[rec["image"]], generated["reconstructed"][i], generated["pixels"][i])
        # each cell is its image untouched: no label may cover a corner the reader is asked about
        for column, image in enumerate(shown, start=1):
            assert np.array_equal(sheet[y : y + size, column * cell : column * cell + size], image)
    summary = summary_table(pd.DataFrame(), pd.DataFrame(), table, n_boot=20)
    assert {"correct", "ceiling"} <= set(summary[summary["task"] == "generation"]["metric"])


@pytest.mark.parametrize("variant", ["vq-vq", "sem-sem"])
def test_teacher_forced_on_its_own_generation_the_model_draws_it_again(trained_runs, tiny_reader, variant):
    """With each test image replaced by the model's own greedy generation, the teacher-forced tokens are that
    generation (codes exactly, features to float error) and the `teacher_forced` column reads what `correct` reads,
    row for row. On the true images the predictions follow the truth's earlier tokens and differ."""
    import copy

    from models.build import load_checkpoint
    from models.evaluate import FeatureProbes

    cfg = trained_runs[variant]
    dataset = load_dataset(cfg.dataset)
    built, _ = load_checkpoint(checkpoints_of(cfg.out)[0])
    ev = Evaluator(built, dataset, cfg.cache_dir, EvalConfig(limit=6))
    vq = variant == "vq-vq"
    reader = load_reader(tiny_reader) if vq else None
    probes = None if vq else FeatureProbes(ev.gen_space, dataset)
    table, generated = ev.generation(reader, probes)
    tokens, forced = generated["tokens"], generated["teacher_forced"]
    assert forced.shape == tokens.shape and table["teacher_forced"].isin([0.0, 1.0]).all()
    assert (forced.float() - tokens.float()).abs().max() > 0.5
    blind = generated["teacher_forced_blind"]  # the same true tokens under a request that names nothing
    assert blind.shape == tokens.shape and table["teacher_forced_blind"].isin([0.0, 1.0]).all()
    assert (blind.float() - forced.float()).abs().max() > 0.5

    own = copy.copy(ev.gen_space)  # a copy: sem-sem's understanding side reads the same space object
    field = "codes" if vq else "features"
    values = np.array(getattr(own, field))
    for record, drawn in zip(generated["records"], tokens, strict=True):
        values[own.index[record["image"]]] = drawn.numpy()
    setattr(own, field, values)
    ev.gen_space = own
    again = ev.teacher_forced_tokens(generated["records"])
    if vq:
        assert torch.equal(again, tokens)
    else:
        # float16 in the cache and the norm's round trip: 6e-4 at most here, against 3.2 on the true images
        assert (again - tokens).abs().max() < 1e-2
    ev.generate = lambda records: tokens
    table, _ = ev.generation(reader, probes)
    assert table["teacher_forced"].tolist() == table["correct"].tolist()
    summary = summary_table(pd.DataFrame(), pd.DataFrame(), table, n_boot=20)
    assert {"teacher_forced", "teacher_forced_blind"} <= set(summary[summary["task"] == "generation"]["metric"])


def test_tokenizer_ceiling_reads_the_images_and_their_reconstructions(tiny_embedded, tiny_reader, tmp_path, capsys):
    """`truth` is the reader's reading of the test images; a lossless tokenizer's reconstructions score the same;
    `unilens reader ceiling` writes the tables and refuses a tokenizer of another image size."""
    from models.encoders.vq import VQVAE, VQConfig, VQEncoder, load_vq
    from models.reader import labels_of, tokenizer_ceiling
    from tasks.world import Watch
    from unilens.cli import main

    dataset = load_dataset(tiny_embedded / "data")
    reader = load_reader(tiny_reader)
    rows, recon = tokenizer_ceiling(reader, load_vq(tiny_embedded / "vq"), dataset)
    watches = {r["image"]: Watch.from_dict(r["watch"]) for r in dataset.test}
    assert recon.shape == (len(watches), 32, 32, 3) and recon.dtype == np.uint8
    read = reader.read(np.stack([dataset.images[i] for i in watches]))
    for head in ("weather", "hour"):
        right = [read[head][k] == labels_of(w)[head] for k, w in enumerate(watches.values())]
        assert rows[rows["attribute"] == head]["truth"].mean() == pytest.approx(np.mean(right))

    class Lossless:
        def codes(self, pixels):
            return pixels

        def decode(self, codes):
            return codes

    lossless, _ = tokenizer_ceiling(reader, Lossless(), dataset)
    assert (lossless["reconstruction"] == lossless["truth"]).all()
    args = [str(tiny_embedded / "data"), "--reader", str(tiny_reader), "--out"]
    assert main(["reader", "ceiling", str(tiny_embedded / "vq"), *args, str(tmp_path / "ceil"), "--retrain"]) == 0
    table = pd.read_csv(tmp_path / "ceil" / "ceiling.csv")
    retrained = load_reader(tmp_path / "ceil" / "retrained_reader")  # trained on reconstructions, same config
    assert retrained.cfg == reader.cfg and table["retrained"].between(0, 1).all()
    assert set(table["attribute"]) == {"weather", "weather_pos", "battery_pos", "battery_decile", "hour", "minute5"}
    assert (tmp_path / "ceil" / "reconstructions.png").is_file()
    VQEncoder(VQVAE(VQConfig(image_size=64, channels=16))).save_pretrained(tmp_path / "vq64")
    assert main(["reader", "ceiling", str(tmp_path / "vq64"), *args, str(tmp_path / "ceil2")]) == 2
    assert "takes 64 px images, the dataset's are 32 px" in capsys.readouterr().err


def test_eval_baselines_are_a_guess_for_choices_and_the_commonest_prompt_for_generation(tmp_path):
    """The dashed lines of scores.png: 1 / values for multiple choice, the commonest prompted value's share for
    generation (38 of 100 prompts ask for sunny: a generator that always draws sunny scores 0.38)."""
    from analyses.plots import eval_baselines, plot_eval_curves

    rows = []
    for step in (100, 200):
        for value, n in (("sunny", 38), ("cloudy", 33), ("raining", 29)):
            rows.append(dict(task="generation", attribute="weather", value=value, metric="correct", n=n, step=step))
            rows.append(dict(task="vqa_choice", attribute="weather", value=value, metric="choice", n=n, step=step))
        for value in ("top-left", "top-right", "bottom-left", "bottom-right"):
            rows.append(dict(task="vqa_choice", attribute="weather_pos", value=value, metric="choice", n=9, step=step))
        for hour in range(1, 13):
            rows.append(
                dict(task="generation_choice", attribute="hour", value=hour, metric="choice", n=10 + hour, step=step)
            )
        rows.append(dict(task="generation", attribute="weather", value="all", metric="correct", n=100, step=step))
    summary = pd.DataFrame(rows).assign(mean=0.5, lo=0.4, hi=0.6)
    base = eval_baselines(summary).set_index(["task", "attribute"])["baseline"]
    assert base[("generation", "weather")] == pytest.approx(0.38)
    assert base[("vqa_choice", "weather")] == pytest.approx(1 / 3)
    assert base[("vqa_choice", "weather_pos")] == pytest.approx(0.25)
    assert base[("generation_choice", "hour")] == pytest.approx(1 / 12)  # a guess, not the commonest prompted hour
    plot_eval_curves(summary, tmp_path / "scores.png")
    assert (tmp_path / "scores.png").stat().st_size > 1000
    # the weather alone in one panel, after the battery corner in another: a colour cycle would differ between them
    shown = [("vqa_choice", "weather"), ("generation_choice", "battery_pos"), ("generation_choice", "weather")]
    both = [
        dict(task=task, attribute=attribute, value="all", metric="choice", n=50, step=step)
        for task, attribute in shown
        for step in (100, 200)
    ]
    fig = plot_eval_curves(pd.DataFrame(both).assign(mean=0.5, lo=0.4, hi=0.6))
    colors = [{ln.get_label(): ln.get_color() for ln in ax.get_lines()} for ax in fig.axes]
    drawn = [c for c in colors if "weather" in c]
    assert len(drawn) == 2 and len({c["weather"] for c in drawn}) == 1  # one colour per attribute in every panel


def test_eval_scores_another_datasets_questions_on_the_same_images_and_refuses_other_images(trained_runs, tmp_path):
    import shutil

    cfg = trained_runs["vq-vq"]
    trained_on = Path(cfg.dataset)
    asked = tmp_path / "data-first-question"
    shutil.copytree(trained_on, asked)
    # the same test images, each asked its first question only
    records = [json.loads(line) for line in (asked / "test.jsonl").read_text().splitlines()]
    for r in records:
        if r["task"] == "vqa":
            r["conversations"] = r["conversations"][:2]
    (asked / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    eval_cfg = dict(limit=4, captions=False, generation=False, n_boot=20)
    own = run_eval(cfg.out, tmp_path / "own", EvalConfig(**eval_cfg), None, log=lambda *_: None)
    other = run_eval(cfg.out, tmp_path / "other", EvalConfig(**eval_cfg, dataset=str(asked)), None, log=lambda *_: None)
    own_vqa, other_vqa = pd.read_csv(tmp_path / "own" / "vqa.csv"), pd.read_csv(tmp_path / "other" / "vqa.csv")
    assert own_vqa["turn"].max() >= 1 and other_vqa["turn"].max() == 0
    assert set(other_vqa["image"]) == set(own_vqa["image"])
    # the first turns are the same questions of the same model: the same answers
    first = own_vqa[own_vqa["turn"] == 0].sort_values("image")
    assert first["prediction"].tolist() == other_vqa.sort_values("image")["prediction"].tolist()
    assert set(own["dataset"]) == {trained_on.name} and set(other["dataset"]) == {asked.name}

    moved = tmp_path / "data-other-images"
    shutil.copytree(trained_on, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["files"]["images.npy"] = "0" * 64
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UnilensError, match=r"holds other images.*images\.npy differ"):
        run_eval(cfg.out, tmp_path / "bad", EvalConfig(**eval_cfg, dataset=str(moved)), None, log=lambda *_: None)
