"""Activation patching: exactness at the extremes, and batching that changes nothing."""

import copy

import pytest
import torch

from models.generate import question_prompts
from models.sequence import TAG, Encoder, collate
from probes.patching import Cell, patch_sweep


@pytest.fixture(scope="module")
def pair(loaded_vq_run):
    """Clean and corrupt prompts that differ only in their image: the same question about two watches."""
    built, dataset, und, gen = loaded_vq_run
    enc = Encoder(built.tokenizer, und.num_tokens)
    vqa = [r for r in dataset.test if r["task"] == "vqa"][:4]
    clean_seqs = [question_prompts(enc, r)[0][0] for r in vqa]
    corrupt_records = []
    for i, r in enumerate(vqa):
        other = copy.deepcopy(r)
        other["image"] = vqa[(i + 1) % len(vqa)]["image"]
        corrupt_records.append(other)
    corrupt_seqs = [question_prompts(enc, r)[0][0] for r in corrupt_records]
    clean = collate(clean_seqs, und, gen, enc.pad_id, left_pad=True)
    corrupt = collate(corrupt_seqs, und, gen, enc.pad_id, left_pad=True)
    good = torch.tensor([5, 6, 7, 8])
    bad = torch.tensor([9, 10, 11, 12])
    return built.model.eval(), clean, corrupt, good, bad


def test_patching_all_positions_restores_clean_exactly_and_nothing_changes_nothing(pair):
    model, clean, corrupt, good, bad = pair
    cells = [
        Cell("blocks.0.hook_resid_post", "all"),
        Cell("blocks.1.hook_resid_pre", "all"),
        Cell("blocks.1.hook_resid_post", "gen_image"),
    ]  # no gen_image positions in understanding prompts
    df = patch_sweep(model, clean, corrupt, good, bad, cells)
    full = df[df["group"] == "all"]
    assert torch.allclose(torch.tensor(full["patched"].values), torch.tensor(full["clean"].values), atol=1e-4)
    assert (full["effect"] - 1).abs().max() < 1e-3
    empty = df[df["group"] == "gen_image"]
    assert torch.allclose(torch.tensor(empty["patched"].values), torch.tensor(empty["corrupt"].values), atol=1e-5)
    noise = patch_sweep(model, clean, corrupt, good, bad, cells[:1], mode="noise")
    assert torch.allclose(torch.tensor(noise["patched"].values), torch.tensor(noise["corrupt"].values), atol=1e-4)


def test_batched_and_one_cell_at_a_time_agree(pair):
    model, clean, corrupt, good, bad = pair
    cells = [
        Cell(f"blocks.{layer}.hook_resid_{w}", g)
        for layer in range(2)
        for w in ("pre", "mid", "post")
        for g in ("image", "question")
    ]
    together = patch_sweep(model, clean, corrupt, good, bad, cells)
    alone = patch_sweep(model, clean, corrupt, good, bad, cells, batch_cells=1)
    assert len(together) == len(cells) * 4
    assert torch.allclose(torch.tensor(together["patched"].values), torch.tensor(alone["patched"].values), atol=1e-4)
    # an image-only patch in the first layer matters, a patch of an empty group never does
    first = together[(together["site"] == "blocks.0.hook_resid_pre") & (together["group"] == "image")]
    assert (first["patched"] != first["corrupt"]).any()


@pytest.mark.parametrize("attribute", ["weather", "weather_pos", "battery_pos", "hour"])
def test_counterfactual_pairs_change_exactly_one_attribute(loaded_vq_run, attribute):
    import dataclasses

    import numpy as np

    from probes.pairs import ASKED, build_pairs, pair_change
    from tasks.render import render_array
    from tasks.world import Watch

    built, dataset, _und, _gen = loaded_vq_run
    watches = list({r["image"]: Watch.from_dict(r["watch"]) for r in dataset.test}.values())[:6]
    size = int(dataset.manifest["config"]["image_size"])
    pairs = build_pairs(built, watches, attribute, size, seed=3)
    for clean_w, corrupt_w in pairs.watches:
        changed = {k for k, v in dataclasses.asdict(clean_w).items() if dataclasses.asdict(corrupt_w)[k] != v}
        assert changed == {attribute}
        assert corrupt_w.weather_pos != corrupt_w.battery_pos
    changes = [pair_change(a, b, attribute) for a, b in pairs.watches]
    if attribute == "hour":  # another face, same tens digit: the answers part at the hour's second digit
        for clean_w, corrupt_w in pairs.watches:
            assert clean_w.hour % 12 != corrupt_w.hour % 12 and clean_w.hour // 10 == corrupt_w.hour // 10
        assert set(changes) == {"value"}
        digits = [built.tokenizer.decode([int(t)]).strip() for t in [*pairs.good, *pairs.bad]]
        assert all(len(d) == 1 and d.isdigit() for d in digits)
    elif attribute == "weather":
        assert set(changes) == {"value"}
    else:  # a row change parts the answers at their first token, a column change after the shared "top-"
        for (clean_w, corrupt_w), change in zip(pairs.watches, changes, strict=True):
            same_row = getattr(clean_w, attribute).split("-")[0] == getattr(corrupt_w, attribute).split("-")[0]
            assert change == ("column" if same_row else "row")
    # the clean image is the dataset's own rendering of that watch
    ids = [r["image"] for r in dataset.test]
    first = dataset.images[next(iter(dict.fromkeys(ids)))]
    assert np.array_equal(render_array(pairs.watches[0][0], size), first)
    assert torch.equal(pairs.clean.ids, pairs.corrupt.ids) and torch.equal(pairs.clean.tags, pairs.corrupt.tags)
    assert not torch.equal(pairs.clean.und_inputs, pairs.corrupt.und_inputs)
    assert (pairs.good != pairs.bad).all()
    tok = built.tokenizer
    for (clean_w, corrupt_w), g, b, seq in zip(pairs.watches, pairs.good, pairs.bad, pairs.prompts, strict=True):
        from tasks.templates import answer

        # the prompt ends with the answers' shared prefix, and good/bad continue it into the two answers
        prefix = [i for i, t in zip(seq.ids, seq.tags, strict=True) if t == TAG["answer"]]
        asked = ASKED.get(attribute, attribute)
        assert tok.decode([*prefix, int(g)]).replace(" ", "") in answer(clean_w, asked).replace(" ", "")
        assert tok.decode([*prefix, int(b)]).replace(" ", "") in answer(corrupt_w, asked).replace(" ", "")


def test_patch_cli_writes_tables_and_figures(trained_runs, tmp_path):
    import pandas as pd
    import yaml

    from unilens.cli import main

    cfg = {
        "out": str(tmp_path / "patch"),
        "models": {"tiny": trained_runs["sem-sem"].out},
        "attributes": ["weather"],
        "n_pairs": 4,
        "site_kinds": ["resid_post", "mlp_out"],
        "groups": ["image", "question"],
    }
    path = tmp_path / "patch.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["patch", str(path)]) in (0, None)
    summary = pd.read_csv(tmp_path / "patch" / "patching_summary.csv")
    assert set(summary["mode"]) == {"denoise", "noise"}
    n_layers = summary["layer"].max() + 1
    assert len(summary) == 2 * (1 + 2 * 2 * n_layers)  # adapter cell + layers x kinds x groups, per mode
    assert summary["effect"].notna().all()
    assert (tmp_path / "patch" / "patching_weather_denoise.png").stat().st_size > 10_000
    # a figure per site kind, each drawing the lines of its own kind
    assert (tmp_path / "patch" / "patching_weather_denoise_mlp_out.png").is_file()
    from analyses.plots import plot_patching

    for kind in ("resid_post", "mlp_out"):  # question positions have no adapter cell: their line is the kind's own
        lines = {
            line.get_label(): line
            for ax in plot_patching(summary, "weather", "denoise", kind=kind).axes
            for line in ax.lines
        }
        assert len(lines["question"].get_xdata()) == n_layers, kind
    per_example = pd.read_csv(tmp_path / "patch" / "patching.csv")
    assert set(per_example["change"]) == {"value"}  # a weather pair changes the value, never a row or column
    by_change = pd.read_csv(tmp_path / "patch" / "patching_by_change.csv")
    assert len(by_change) == len(summary) and set(by_change["change"]) == {"value"}
    assert per_example.loc[per_example["mode"] == "denoise", "estimated_change"].notna().all()
    assert (tmp_path / "patch" / "attribution_vs_true_patching.png").is_file()
    ig = pd.read_csv(tmp_path / "patch" / "ig_convergence.csv")
    assert (tmp_path / "patch" / "patching_heatmap_weather_noise.png").is_file()
    assert len(ig) == 4 and (tmp_path / "patch" / "ig_weather_tiny.png").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**cfg, "attributes": ["battery"]}))
    assert main(["patch", str(bad)]) == 2


@pytest.fixture(scope="module")
def donor_recipient(trained_runs):
    """A trained LoRA donor and a recipient with the same base LLM whose LoRA updates are still zero."""
    from models.build import build_model, build_spaces, load_checkpoint
    from models.evaluate import checkpoints_of
    from models.presets import FreezeConfig
    from tasks.records import load_dataset

    cfg = trained_runs["sem-sem"]
    donor, _ = load_checkpoint(checkpoints_of(cfg.out)[0])
    recipient = build_model(cfg.model, FreezeConfig("lora"), seed=7)
    recipient.model.load_state_dict(
        {k: v for k, v in donor.model.state_dict().items() if k.startswith("norm_")}, strict=False
    )
    recipient.model.eval()
    dataset = load_dataset(cfg.dataset)
    und, gen = build_spaces(recipient, cfg.model, dataset, cfg.cache_dir)
    records = [r for r in dataset.test if r["task"] == "vqa"]
    return donor, recipient, records, und, gen


def test_cross_model_patching_hands_over_the_donors_answers_at_the_last_layer(donor_recipient):
    """Copying every position at the last layer gives the donor's answers; image positions there change nothing."""
    from probes.cross_model import cross_model_sweep

    donor, recipient, records, und, gen = donor_recipient
    df = cross_model_sweep(donor, recipient, records, und, gen, "weather_pos", ["top-left", "bottom-right"])
    last = df["layer"].max()
    by = {
        k: g.sort_values(["image", "turn"])["choice"].tolist() for k, g in df.groupby(["condition", "layer", "group"])
    }
    assert by[("patched", last, "all")] == by[("donor", -2, "none")]
    assert by[("patched", last, "image")] == by[("recipient", -2, "none")]
    assert by[("donor", -2, "none")] != by[("recipient", -2, "none")] or len(by[("donor", -2, "none")]) < 3


def test_weight_swaps_make_the_donor_together_and_leave_the_recipient_unchanged(donor_recipient):
    """Every swappable part from the donor reproduces the donor's logits; after a sweep the recipient is intact."""
    from models.generate import collate_prompts
    from probes.cross_model import cross_model_sweep, prompts_about, swappable_parts, swapped

    donor, recipient, records, und, gen = donor_recipient
    before = {k: v.clone() for k, v in recipient.model.state_dict().items()}
    df = cross_model_sweep(
        donor, recipient, records, und, gen, "weather_pos", ["top-left", "bottom-right"], groups=("all",), weights=True
    )
    assert all(torch.equal(v, before[k]) for k, v in recipient.model.state_dict().items())
    parts = swappable_parts(recipient.model)
    assert sorted(parts) == [-1, *range(len(recipient.model.blocks))]
    assert set(df.loc[(df["group"] == "weights") & (df["condition"] == "patched"), "layer"]) == set(parts)
    assert (df["condition"] == "all_lora").any()

    enc = Encoder(recipient.tokenizer, und.num_tokens)
    seqs, _ = prompts_about(enc, records, "weather_pos", ["top-left", "bottom-right"])
    batch = collate_prompts(seqs[:4], und, gen, enc.pad_id)
    with torch.no_grad():
        want = donor.model.text_logits(donor.model.hidden(batch)[:, -1])
        own = recipient.model.text_logits(recipient.model.hidden(batch)[:, -1])
        with swapped(recipient.model, donor.model, [n for names in parts.values() for n in names]):
            got = recipient.model.text_logits(recipient.model.hidden(batch)[:, -1])
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(own, want, atol=1e-2)


def test_integrated_gradients_complete_with_the_mean_baseline(pair):
    from probes.attribution import integrated_gradients

    model, clean, _corrupt, good, bad = pair
    attr, delta = integrated_gradients(model, clean, good, bad, n_steps=64)
    assert attr.shape[0] == clean.ids.shape[0] and attr.shape[1] == int((clean.tags[0] == TAG["image"]).sum())
    with torch.no_grad():
        from probes.patching import answer_logit_diff

        full = answer_logit_diff(model, clean, good, bad, model.hidden(clean))
    # completeness: attributions sum to f(input) - f(baseline) up to the reported delta, which is small
    total = attr.sum(1)
    assert (delta.abs() <= 0.05 * (total - delta).abs().clamp(min=0.05)).all(), (delta, total)
    assert full.abs().max() > 0


def test_attribution_patching_matches_true_patching_in_the_linear_regime(pair):
    """With a corrupt input a small step from the clean one, the first-order estimate equals true patching."""
    from probes.attribution import attribution_patching

    model, clean, _corrupt, good, bad = pair
    near = copy.copy(clean)
    g = torch.Generator().manual_seed(0)
    near.und_inputs = clean.und_inputs + 1e-2 * torch.randn(clean.und_inputs.shape, generator=g)
    cells = [Cell(f"blocks.{layer}.hook_resid_post", grp) for layer in range(2) for grp in ("image", "all")]
    est = attribution_patching(model, clean, near, good, bad, cells)
    true = patch_sweep(model, clean, near, good, bad, cells)
    change = torch.tensor((true["patched"] - true["corrupt"]).values)
    estimate = torch.tensor(est["estimated_change"].values)
    assert change.abs().max() > 1e-5  # the perturbation moves the answer at all
    assert torch.allclose(estimate, change, atol=0.05 * change.abs().max().item())


def test_layer_integrated_gradients_complete_at_every_block_and_end_at_the_answer_position(pair):
    from probes.attribution import layer_integrated_gradients

    model, clean, _corrupt, good, bad = pair
    attr, total = layer_integrated_gradients(model, clean, good, bad, n_steps=32)
    assert attr.shape == (clean.ids.shape[0], len(model.blocks), clean.ids.shape[1])
    scale = total.abs().max()
    # every block's output is a complete cut: its attributions sum to f(input) - f(baseline)
    assert (attr.sum(-1) - total[:, None]).abs().max() < 0.05 * scale + 1e-4
    # after the last block the answer reads only the final position, so nothing else gets attribution
    assert attr[:, -1, :-1].abs().max() < 1e-5 * (1 + scale)


def test_attribute_cli_writes_layer_shares_and_heatmaps(trained_runs, tmp_path):
    import pandas as pd
    import yaml

    from unilens.cli import main

    cfg = {
        "out": str(tmp_path / "attr"),
        "models": {"tiny": trained_runs["sem-sem"].out},
        "attributes": ["weather"],
        "n_examples": 4,
        "n_steps": 8,
    }
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["attribute", str(tmp_path / "a.yaml")]) in (0, None)
    summary = pd.read_csv(tmp_path / "attr" / "layer_attributions_summary.csv")
    n_layers = summary["layer"].max() + 1
    assert len(summary) == 3 * n_layers  # image, question, template per block
    shares = summary.groupby("layer")["share"].sum()
    assert ((shares - 1).abs() < 0.2).all()  # the three groups cover every position that moves the answer
    last = summary[summary["layer"] == n_layers - 1].set_index("group")["share"]
    assert last["template"] == pytest.approx(1.0, abs=0.02)
    assert (tmp_path / "attr" / "layer_attribution_weather.png").is_file()
    assert (tmp_path / "attr" / "ig_weather_tiny.png").is_file()
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({**cfg, "attributes": ["time"]}))
    assert main(["attribute", str(tmp_path / "b.yaml")]) == 2


def test_layer_shares_flag_answers_that_do_not_depend_on_the_image():
    import numpy as np
    import pandas as pd

    from analyses.attribute_layers import summarize_shares

    rows = []
    for example, total in enumerate([1.0, -1.0, 1.0, -1.0, 2.0, 2.0]):  # cancelling totals, then a steady one
        model = "noise" if example < 4 else "reads"
        rows.append(
            {
                "model": model,
                "attribute": "weather",
                "layer": 0,
                "group": "image",
                "example": example,
                "attribution": 0.75 * total,
                "total": total,
                "error": 0.0,
            }
        )
    shares = summarize_shares(pd.DataFrame(rows), n_boot=50).set_index("model")
    assert not shares.loc["noise", "reads_image"]  # |mean total| is 0: a ratio over it would be noise
    assert np.isnan(shares.loc["noise", "share"])
    assert shares.loc["reads", "reads_image"] and shares.loc["reads", "share"] == pytest.approx(0.75)


def test_patch_effects_are_the_ratio_of_means_and_nan_without_a_gap():
    """Denoising effect = mean(patched - corrupt) / mean(clean - corrupt); a site where clean and corrupt agree has
    no effect to measure: not finite, not separating, and no warning."""
    import warnings

    import numpy as np
    import pandas as pd

    from analyses.patch_layers import summarize_effects

    rng = np.random.default_rng(0)
    clean, corrupt = rng.normal(3.0, 0.2, 40), rng.normal(-1.0, 0.2, 40)
    rows = [
        {"site": "a", "mode": "denoise", "clean": c, "corrupt": k, "patched": k + 0.25 * (c - k)}
        for c, k in zip(clean, corrupt, strict=True)
    ]
    rows += [{"site": "b", "mode": "denoise", "clean": 1.0, "corrupt": 1.0, "patched": 1.0 + x} for x in clean]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = summarize_effects(pd.DataFrame(rows), ["site"], n_boot=200).set_index("site")
    assert table.loc["a", "effect"] == pytest.approx(0.25) and table.loc["a", "lo"] <= 0.25 <= table.loc["a", "hi"]
    assert table.loc["a", "separates"] and not table.loc["b", "separates"]
    assert not np.isfinite(table.loc["b", "effect"])
