"""Hooks and probes: leakage, chance baselines, a planted signal, LoRA merged vs unmerged, position groups."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from models.generate import question_prompts
from models.sequence import TAG, Encoder, collate
from probes.activations import PROMPT_END, ActivationSet, _sequences, asks, collect, group_mask
from probes.hooks import HookedVLM
from probes.linear import cross_context, layerwise
from tasks.records import load_dataset


def synthetic_set(n_images=120, dup=2, d=16, signal=3.0, seed=0, context="understand") -> ActivationSet:
    rng = np.random.default_rng(seed)
    labels = rng.choice(["sunny", "cloudy", "raining"], n_images)
    codes = pd.Series(labels).map({"sunny": 0, "cloudy": 1, "raining": 2}).to_numpy()
    rows, xs = [], {"adapter": [], "blocks.0.hook_resid_post": []}
    for i in range(n_images):
        for _ in range(dup):
            noise = rng.normal(size=d)
            xs["adapter"].append(noise)
            xs["blocks.0.hook_resid_post"].append(noise + signal * np.eye(d)[codes[i]])
            rows.append(
                {"image": f"img_{i}", "context": context, "weather": labels[i], "face_bin": str(rng.integers(27))}
            )
    X = {k: np.array(v, dtype=np.float32) for k, v in xs.items()}
    return ActivationSet(list(X), X, pd.DataFrame(rows))


def test_probe_never_sees_an_image_on_both_sides(monkeypatch):
    import probes.linear as linear

    seen = []
    real = linear._fit_score

    def spy(attribute, X, y, tr, te, **kw):
        seen.append((tr, te))
        return real(attribute, X, y, tr, te, **kw)

    monkeypatch.setattr(linear, "_fit_score", spy)
    acts = synthetic_set(dup=3)
    layerwise(acts, "weather", seeds=(0, 1), n_folds=4)
    assert seen
    # rows are permuted per seed inside layerwise; check at the level of images via a grouped re-run
    from sklearn.model_selection import GroupKFold

    groups = acts.meta["image"].to_numpy()
    for tr, te in GroupKFold(4).split(groups, groups, groups):
        assert not set(groups[tr]) & set(groups[te])


def test_shuffled_labels_give_chance_and_signal_is_found():
    df = layerwise(synthetic_set(), "weather", seeds=(0, 1, 2), n_folds=5)
    by_site = df.groupby("site")[["score", "shuffled", "control", "majority"]].mean()
    assert by_site.loc["blocks.0.hook_resid_post", "score"] > 0.95
    assert abs(by_site.loc["adapter", "score"] - 1 / 3) < 0.12  # no signal at the adapter
    assert (abs(by_site["shuffled"] - 1 / 3) < 0.12).all()
    assert (by_site["control"] < 0.6).all() and (df["selectivity"] <= 1).all()


def test_cross_context_splits_shared_images():
    a = synthetic_set(context="generate", dup=1)
    b = synthetic_set(context="understand", dup=1, seed=0)
    df = cross_context(a, b, "weather", seeds=(0, 1))
    row = df[df["site"] == "blocks.0.hook_resid_post"]
    assert (row["n_test"] == 60).all()  # half of the 120 shared images held out for testing
    assert row["score"].min() > 0.9


@pytest.fixture
def lora_model(loaded_vq_run):
    return loaded_vq_run


def test_cached_activations_identical_with_lora_merged_and_unmerged(lora_model):
    built, dataset, und, gen = lora_model
    enc = Encoder(built.tokenizer, und.num_tokens)
    records = [r for r in dataset.test if r["task"] == "vqa"][:4]
    batch = collate([question_prompts(enc, r)[0][0] for r in records], und, gen, enc.pad_id)
    model = built.model.eval()
    _, a = HookedVLM(model).run_with_cache(batch, lambda n: "resid" in n or n.endswith("mlp_out"))
    merged = copy.deepcopy(model)
    merged.llm = merged.llm.merge_and_unload()
    assert not hasattr(merged.llm, "peft_config")
    _, b = HookedVLM(merged).run_with_cache(batch, lambda n: "resid" in n or n.endswith("mlp_out"))
    assert set(a) == set(b) and len(a) == 2 * 4
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name


def test_resid_sites_are_consistent(lora_model):
    built, dataset, und, gen = lora_model
    enc = Encoder(built.tokenizer, und.num_tokens)
    rec = next(r for r in dataset.test if r["task"] == "vqa")
    batch = collate([question_prompts(enc, rec)[0][0]], und, gen, enc.pad_id)
    _, c = HookedVLM(built.model.eval()).run_with_cache(batch)
    for layer in range(len(built.model.blocks)):
        pre, mid, post = (c[f"blocks.{layer}.hook_resid_{w}"] for w in ("pre", "mid", "post"))
        assert torch.allclose(pre + c[f"blocks.{layer}.hook_attn_out"], mid, atol=1e-5)
        assert torch.allclose(mid + c[f"blocks.{layer}.hook_mlp_out"], post, atol=1e-5)
        if layer:
            assert torch.equal(pre, c[f"blocks.{layer - 1}.hook_resid_post"])
    with pytest.raises(KeyError, match="unknown hook site"):
        HookedVLM(built.model).run_with_cache(batch, ["blocks.0.hook_resid_sideways"])


@pytest.mark.parametrize("site", ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid"])
def test_planted_signal_is_recovered_exactly_where_planted(lora_model, site):
    built, dataset, und, gen = lora_model
    model = built.model.eval()
    enc = Encoder(built.tokenizer, und.num_tokens)
    records = [r for r in dataset.test if r["task"] == "vqa"] + [r for r in dataset.train if r["task"] == "vqa"][:40]
    rng = np.random.default_rng(0)
    planted = rng.integers(0, 2, len(records))  # random labels: no earlier layer can know them
    direction = torch.randn(model.d_model)
    direction = 4 * direction / direction.norm()

    def hooks(batch, start):
        labels = torch.tensor(planted[start : start + batch.ids.shape[0]], dtype=torch.float32)
        image = (batch.tags == TAG["image"]).float()[..., None]

        def plant(x, name):
            return x + (2 * labels - 1)[:, None, None] * image * direction

        return [(site, plant)]

    acts = collect(model, records, und, gen, enc, "understand", batch_size=16, hooks=hooks)
    acts.meta["planted"] = planted
    df = layerwise(acts, "planted", seeds=(0,), n_folds=4)
    score = df.groupby("layer")["score"].mean()
    # layer 0's output is read before block 1 edits its input, so either way the signal first shows at layer 1
    assert score.loc[1:].min() > 0.9, score
    assert score.loc[:0].max() < 0.75, score
    assert set(score.index) == {-1, 0, 1}


def test_transformer_lens_bridge_matches_our_cache(lora_model):
    from probes.bridge import to_bridge

    built, dataset, und, gen = lora_model
    enc = Encoder(built.tokenizer, und.num_tokens)
    rec = next(r for r in dataset.test if r["task"] == "vqa")
    batch = collate([question_prompts(enc, rec)[0][0]], und, gen, enc.pad_id)  # image-bearing, unpadded
    model = built.model.eval()
    lora_before = {n: p.clone() for n, p in model.named_parameters() if "lora_" in n}
    _, ours = HookedVLM(model).run_with_cache(batch, lambda n: n.endswith("resid_post"))
    bridge = to_bridge(model)
    with torch.no_grad():
        emb = model.embed(batch)
        logits, theirs = bridge.run_with_cache(emb.clone())
        ours_logits = model.text_logits(model.hidden(batch))
    for name, value in ours.items():
        assert torch.allclose(theirs[name], value, atol=1e-5), name
    assert torch.allclose(logits, ours_logits, atol=1e-5)
    # the bridge wrapped a merged copy: the trained model still has its LoRA weights, unchanged
    assert lora_before and all(torch.equal(p, lora_before[n]) for n, p in model.named_parameters() if "lora_" in n)


def test_prompt_end_pools_the_last_position_of_a_right_padded_batch():
    tags = torch.tensor([[1, 2, 3, 3, 0, 0], [1, 2, 3, 3, 2, 2]])
    mask = group_mask(tags, PROMPT_END)
    assert mask.tolist() == [[0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]]
    assert torch.equal(group_mask(tags, "image"), (tags == TAG["image"]).float())
    with pytest.raises(ValueError, match="unknown position group 'answers'"):
        group_mask(tags, "answers")


def test_asking_prompts_each_record_up_to_that_questions_answer(lora_model):
    built, dataset, und, _ = lora_model
    enc = Encoder(built.tokenizer, und.num_tokens)
    records = [r for r in dataset.test if r["task"] == "vqa" and asks(r, "weather_pos")][:6]
    assert records, "the toy dataset asks where the weather icon is"
    seqs = _sequences(enc, records, "understand", asking="weather_pos")
    for record, seq in zip(records, seqs, strict=True):
        turn = next(i for i, t in enumerate(record["conversations"]) if t.get("attribute") == "weather_pos")
        text = built.tokenizer.decode([i for i, k in zip(seq.ids, seq.kind, strict=True) if k == 0])
        assert record["conversations"][turn]["value"].replace("<image>\n", "").strip() in text
        if turn + 1 < len(record["conversations"]):
            assert record["conversations"][turn + 1]["value"] not in text.split("ASSISTANT:")[-1]
    never = [r for r in dataset.test if r["task"] == "vqa" and not asks(r, "weather_pos")][:1]
    if never:
        with pytest.raises(ValueError, match="never ask 'weather_pos'"):
            _sequences(enc, never, "understand", asking="weather_pos")


def test_signal_planted_at_the_answer_position_is_found_there_and_not_in_the_image(lora_model):
    built, dataset, und, gen = lora_model
    model = built.model.eval()
    enc = Encoder(built.tokenizer, und.num_tokens)
    records = [r for r in dataset.test if r["task"] == "vqa"] + [r for r in dataset.train if r["task"] == "vqa"][:40]
    planted = np.random.default_rng(1).integers(0, 2, len(records))
    direction = torch.randn(model.d_model)
    direction = 4 * direction / direction.norm()

    def hooks(batch, start):
        labels = torch.tensor(planted[start : start + batch.ids.shape[0]], dtype=torch.float32)
        last = group_mask(batch.tags, PROMPT_END)[..., None]
        return [("blocks.1.hook_resid_pre", lambda x, name: x + (2 * labels - 1)[:, None, None] * last * direction)]

    scores = {}
    for group in (PROMPT_END, "image"):
        acts = collect(model, records, und, gen, enc, "understand", group=group, batch_size=16, hooks=hooks)
        acts.meta["planted"] = planted
        scores[group] = layerwise(acts, "planted", seeds=(0,), n_folds=4).groupby("layer")["score"].mean()
    assert scores[PROMPT_END].loc[1:].min() > 0.9, scores
    assert scores["image"].max() < 0.75, scores


def test_probe_config_names_a_wrong_position_group():
    from analyses.probe_layers import ProbeConfig
    from unilens.errors import UnilensError

    with pytest.raises(UnilensError, match=r"unknown position group\(s\) \['answers'\]"):
        ProbeConfig(groups={"understand": ["answers"]})
    with pytest.raises(UnilensError, match="'prompt_end' is an understanding group"):
        ProbeConfig(groups={"generate": [PROMPT_END]})
    with pytest.raises(UnilensError, match=r"none asks \['face_bin'\]"):
        ProbeConfig(groups={"understand": [PROMPT_END]}, attributes=["face_bin"])
    with pytest.raises(UnilensError, match="unknown context"):
        ProbeConfig(groups={"understanding": ["image"]})


def test_run_probes_at_the_answer_position_writes_rows_and_a_figure_per_group(trained_runs, tmp_path):
    from analyses.probe_layers import ProbeConfig, run_probes

    cfg = ProbeConfig(
        models={"vq": str(trained_runs["vq-vq"].out)},
        out=str(tmp_path / "probes"),
        attributes=["weather", "battery_pos"],
        groups={"understand": ["image", PROMPT_END], "generate": ["gen_image"]},
        seeds=[0],
        n_folds=3,
    )
    layers = run_probes(cfg, log=lambda *_: None)["probes"]
    assert set(layers["group"]) == {"image", PROMPT_END, "gen_image"}
    at_end = layers[layers["group"] == PROMPT_END]
    assert "adapter" not in set(at_end["site"]) and "adapter" in set(layers[layers["group"] == "image"]["site"])
    dataset = load_dataset(trained_runs["vq-vq"].dataset)
    for attribute, question in (("weather", "weather"), ("battery_pos", "battery_pos")):
        n = sum(r["task"] == "vqa" and asks(r, question) for r in dataset.test)
        assert set(at_end[at_end["attribute"] == attribute]["n_examples"]) == {n}
    assert at_end["score"].between(0, 1).all() and at_end["score"].notna().all()
    out = tmp_path / "probes"
    assert (out / "probe_weather_understand_prompt_end.png").stat().st_size > 0
    assert (out / "probe_weather_understand.png").exists() and (out / "cross_context.csv").exists()


@pytest.mark.parametrize("command", ["probe", "patch", "attribute"])
def test_an_analysis_refuses_a_missing_model_before_analysing_the_others(command, trained_runs, tmp_path):
    from analyses.attribute_layers import AttributeConfig, run_attributions
    from analyses.patch_layers import PatchConfig, run_patching
    from analyses.probe_layers import ProbeConfig, run_probes
    from unilens.errors import UnilensError

    models = {"vq": str(trained_runs["vq-vq"].out), "later": str(tmp_path / "not-trained-yet")}
    out = str(tmp_path / "out")
    config, run = {
        "probe": (ProbeConfig(models=models, out=out, seeds=[0], n_folds=2), run_probes),
        "patch": (PatchConfig(models=models, out=out, attributes=["weather"], n_pairs=2), run_patching),
        "attribute": (AttributeConfig(models=models, out=out, attributes=["weather"], n_examples=2), run_attributions),
    }[command]
    logged = []
    with pytest.raises(UnilensError, match="not-trained-yet: no such folder; give a run folder with checkpoints"):
        run(config, log=logged.append)
    assert logged == [] and not (tmp_path / "out").exists()


def test_a_fold_with_one_label_gives_the_constant_predictor():
    from probes.linear import LinearProbe

    X = np.random.default_rng(0).normal(size=(6, 3))
    probe = LinearProbe().fit(X, np.array(["raining"] * 6))
    assert probe.predict(X[:2]).tolist() == ["raining", "raining"]
    assert probe.score(X, np.array(["raining"] * 3 + ["sunny"] * 3)) == 0.5


def test_a_probe_figure_without_the_adapter_site_names_its_axis_by_block():
    from analyses.plots import plot_probe_layers

    rows = [
        {"model": "m", "layer": layer, "attribute": "weather", "metric": "accuracy", "score": 0.5, "seed": 0, "fold": f}
        for layer in (0, 1)
        for f in range(3)
    ]
    fig = plot_probe_layers(pd.DataFrame(rows), "weather")
    assert fig.axes[0].get_xlabel() == "LLM block"
    fig = plot_probe_layers(pd.DataFrame([{**r, "layer": r["layer"] - 1} for r in rows]), "weather")
    assert fig.axes[0].get_xlabel() == "layer (adapter output, then LLM block)"


def test_the_k_fold_interval_is_the_corrected_t_interval_and_wider_than_a_bootstrap():
    from scipy import stats

    from analyses.plots import by_layer, cv_mean_ci, mean_ci

    scores = np.array([0.70, 0.74, 0.78, 0.72, 0.76, 0.71, 0.75, 0.77, 0.73, 0.79])  # 2 seeds x 5 folds
    mean, lo, hi = cv_mean_ci(scores, n_folds=5)
    half = stats.t.ppf(0.975, 9) * np.sqrt((1 / 10 + 1 / 4) * scores.var(ddof=1))
    assert mean == pytest.approx(0.745)
    assert (lo, hi) == (pytest.approx(0.745 - half), pytest.approx(0.745 + half))
    _, boot_lo, boot_hi = mean_ci(scores)
    assert hi - lo > 2 * (boot_hi - boot_lo)  # sqrt(0.35 / 0.1) = 1.87 from the correction, t over z for the rest
    rows = pd.DataFrame({"layer": [0] * 10, "fold": list(range(5)) * 2, "score": scores})
    assert by_layer(rows, "score", [], n_folds=5)[["lo", "hi"]].to_numpy().tolist() == [[lo, hi]]
    with pytest.raises(ValueError, match="at least 2 folds"):
        cv_mean_ci(scores, n_folds=1)
    near_ceiling = np.array([1.0, 0.98, 1.0, 0.99, 1.0])
    assert cv_mean_ci(near_ceiling, n_folds=5)[2] > 1.0
    assert cv_mean_ci(near_ceiling, n_folds=5, bounds=(0.0, 1.0))[2] == 1.0


def test_the_report_reads_each_position_group_on_its_own(tmp_path):
    from analyses.report import probe_section

    rows = []
    for group, peak_layer, layers in (("image", 0, [-1, 0, 1]), ("prompt_end", 1, [0, 1])):
        for layer in layers:
            for seed in range(2):
                for fold in range(5):
                    score = (0.9 if group == "image" else 0.6) if layer == peak_layer else 0.4
                    rows.append(
                        {
                            "model": "m",
                            "context": "understand",
                            "group": group,
                            "attribute": "weather",
                            "layer": layer,
                            "seed": seed,
                            "fold": fold,
                            "metric": "accuracy",
                            "score": score + 0.01 * fold,
                            "chance": 1 / 3,
                        }
                    )
    pd.DataFrame(rows).to_csv(tmp_path / "probes.csv", index=False)
    text = probe_section(tmp_path)
    assert "m, understand (image): weather best decoded at layer 0: 0.920 [" in text
    assert "(adapter output 0.420, chance 0.333)" in text
    assert "m, understand (prompt_end): weather best decoded at layer 1: 0.620 [" in text
    assert "(chance 0.333)" in text


def test_region_token_mask_follows_each_watch_and_the_token_order():
    from probes.activations import region_token_mask

    records = [
        {"id": "a", "watch": {**_watch_dict(), "weather_pos": "top-right", "battery_pos": "bottom-left"}},
        {"id": "b", "watch": {**_watch_dict(), "weather_pos": "bottom-left", "battery_pos": "top-right"}},
    ]
    raster = region_token_mask(records, "weather_region", 64)
    assert raster[0].nonzero().flatten().tolist() == [6, 7, 14, 15]  # the icon's four cells, top right
    assert raster[1].nonzero().flatten().tolist() == [48, 49, 56, 57]
    # transposed: raster cell (row r, column c) is token c * 8 + r
    assert region_token_mask(records, "weather_region", 64, "transposed")[0].nonzero().flatten().tolist() == [
        48,
        49,
        56,
        57,
    ]
    assert region_token_mask(records, "battery_region", 64)[1].sum() > 0
    from unilens.errors import UnilensError

    with pytest.raises(UnilensError, match="square token grid, got 60"):
        region_token_mask(records, "weather_region", 60)
    with pytest.raises(ValueError, match="depends on each record's watch"):
        group_mask(torch.zeros(1, 4, dtype=torch.long), "weather_region")


def _watch_dict() -> dict:
    from tasks.world import Watch

    return Watch(
        face_color=(40, 40, 200),
        hour=3,
        minute=20,
        second=0,
        weather="sunny",
        weather_pos="top-left",
        battery=50,
        battery_pos="bottom-right",
    ).to_dict()


@pytest.mark.parametrize("order", ["raster", "transposed"])
def test_region_group_averages_exactly_the_items_tokens(lora_model, order):
    """At every site, the weather_region set is the mean over the image tokens that draw the icon, found here from
    the raster cells by hand: the adapter's output over the raw features' cells, the residual stream over the
    sequence's image positions."""
    from tasks.render import region_slots
    from tasks.world import Watch

    built, dataset, und, gen = lora_model
    model = copy.deepcopy(built.model).eval()
    model.cfg.image_order = order
    enc = Encoder(built.tokenizer, und.num_tokens)
    records = [r for r in dataset.test if r["task"] == "vqa"][:5]
    acts = collect(model, records, und, gen, enc, "understand", group="weather_region", batch_size=2)
    side = int(und.num_tokens**0.5)
    hooked = HookedVLM(model)
    for i, rec in enumerate(records):
        cells = region_slots(Watch.from_dict(rec["watch"]), "weather", side)
        tokens = cells if order == "raster" else [(s % side) * side + s // side for s in cells]
        raw = und.inputs(rec["image"])[None]
        with torch.no_grad():
            adapted = model.vision_in(model.distort_in(model.norm_in(raw)))[0]  # per token, raster order
            batch = collate([question_prompts(enc, rec)[0][0]], und, gen, enc.pad_id)
            _, cache = hooked.run_with_cache(batch, lambda n: n == "blocks.1.hook_resid_post")
        expected_adapter = adapted[cells].mean(0).numpy()
        image_positions = (batch.tags[0] == TAG["image"]).nonzero().flatten()
        expected_resid = cache["blocks.1.hook_resid_post"][0, image_positions[tokens]].mean(0).numpy()
        np.testing.assert_allclose(acts.X["adapter"][i], expected_adapter, atol=1e-5)
        np.testing.assert_allclose(acts.X["blocks.1.hook_resid_post"][i], expected_resid, atol=1e-4)


def test_probing_an_answer_position_no_record_asks_fails_before_any_model_runs(trained_runs, tmp_path):
    """A model whose data never asks the weather (a time-only stage) cannot be probed at the weather's answer
    position: the config is refused up front, naming the model and the question, not with a KeyError minutes in."""
    import json
    import shutil

    from analyses.probe_layers import ProbeConfig, run_probes
    from models.evaluate import checkpoints_of
    from unilens.errors import UnilensError

    data = tmp_path / "data-no-weather"
    shutil.copytree(trained_runs["sem-sem"].dataset, data)
    kept = []
    for line in (data / "test.jsonl").read_text().splitlines():
        record = json.loads(line)
        turns = record["conversations"]
        if record["task"] == "vqa":  # drop each weather question with its answer
            pairs = [turns[i : i + 2] for i in range(0, len(turns), 2)]
            turns = [t for pair in pairs if pair[0].get("attribute") != "weather" for t in pair]
            if not turns:
                continue
        kept.append(json.dumps({**record, "conversations": turns}))
    (data / "test.jsonl").write_text("\n".join(kept) + "\n")
    ckpt = tmp_path / "time-only" / "step-1"
    shutil.copytree(checkpoints_of(trained_runs["sem-sem"].out)[0], ckpt)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["dependencies"]["dataset"]["path"] = str(data)
    (ckpt / "manifest.json").write_text(json.dumps(manifest))

    cfg = ProbeConfig(
        models={"mixed": str(trained_runs["vq-vq"].out), "time-only": str(ckpt)},
        out=str(tmp_path / "probes"),
        attributes=["hour", "weather"],
        groups={"understand": ["image", PROMPT_END]},
        seeds=[0],
        n_folds=2,
    )
    logged = []
    refused = r"probe model 'time-only': no test VQA record .* asks the 'weather' question"
    with pytest.raises(UnilensError, match=refused):
        run_probes(cfg, log=logged.append)
    assert logged == [] and not (tmp_path / "probes").exists()
    cfg.groups = {"understand": ["image"]}  # the image tokens need no question: the same models probe there
    layers = run_probes(cfg, log=lambda *_: None)["probes"]
    assert set(layers["model"]) == {"mixed", "time-only"} and set(layers["attribute"]) == {"hour", "weather"}
