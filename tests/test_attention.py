"""Attention patterns and the answer's attention to a drawn item: the pattern is the one the block applied, and the
masses are sums of it over the right positions."""

import subprocess
import sys

import pandas as pd
import pytest
import torch

from models.generate import question_prompts
from models.sequence import TAG, Encoder, collate
from probes.activations import asks
from probes.attention import answer_attention, summarize_attention
from probes.hooks import HookedVLM


def _batch(run, n=4):
    built, dataset, und, gen = run
    enc = Encoder(built.tokenizer, und.num_tokens)
    records = [r for r in dataset.test if r["task"] == "vqa"][:n]
    # different prompt lengths, so the batch is right-padded
    seqs = [question_prompts(enc, r)[-1 - (i % 2)][0] for i, r in enumerate(records)]
    return collate(seqs, und, gen, enc.pad_id)


def test_pattern_is_causal_sums_to_one_and_rebuilds_the_attention_output(loaded_vq_run):
    built = loaded_vq_run[0]
    model = built.model.eval()
    batch = _batch(loaded_vq_run)
    hooked = HookedVLM(model)
    kernel = model.base_llm.config._attn_implementation
    patterns = hooked.run_with_patterns(batch)
    assert model.base_llm.config._attn_implementation == kernel  # the model's own kernel is back
    assert len(patterns) == hooked.n_layers
    real = batch.tags != TAG["pad"]
    for name, p in patterns.items():
        p = p.float()
        length = p.shape[-1]
        future = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        assert p[..., future].abs().max() == 0, name
        sums = p.sum(-1)  # (batch, heads, query)
        assert torch.allclose(sums[real[:, None, :].expand_as(sums)], torch.ones(()), atol=1e-5), name
        assert p[~real[:, None, None, :].expand_as(p)].abs().max() == 0, name  # no weight on padding keys

    # the pattern times the values, through the output projection, is the block's attention output
    layer = 1
    _, cache = hooked.run_with_cache(batch, [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_attn_out"])
    block = model.blocks[layer]
    attn = block.self_attn
    with torch.no_grad():
        x = block.input_layernorm(cache[f"blocks.{layer}.hook_resid_pre"])
        v = attn.v_proj(x).view(*x.shape[:2], -1, attn.head_dim).transpose(1, 2)  # (batch, kv heads, keys, dim)
        p = patterns[f"blocks.{layer}.attn.hook_pattern"]
        v = v.repeat_interleave(p.shape[1] // v.shape[1], dim=1)
        out = attn.o_proj((p @ v).transpose(1, 2).reshape(*x.shape[:2], -1))
    assert torch.allclose(out[real], cache[f"blocks.{layer}.hook_attn_out"][real], atol=1e-4)
    with pytest.raises(KeyError, match="no block"):
        hooked.run_with_patterns(batch, layers=[hooked.n_layers])


def test_answer_attention_sums_the_pattern_over_the_icons_tokens(loaded_vq_run):
    from tasks.render import region_slots
    from tasks.world import Watch

    built, dataset, und, gen = loaded_vq_run
    model = built.model.eval()
    enc = Encoder(built.tokenizer, und.num_tokens)
    records = [r for r in dataset.test if r["task"] == "vqa" and asks(r, "weather")][:5]
    rows = answer_attention(model, records, und, gen, enc, "weather", batch_size=2)
    heads = model.base_llm.config.num_attention_heads
    assert len(rows) == len(records) * len(model.blocks) * heads
    assert ((rows["to_region"] >= 0) & (rows["to_region"] <= rows["to_image"] + 1e-6)).all()
    assert (rows["to_image"] <= 1 + 1e-5).all()
    side = int(und.num_tokens**0.5)
    rec = records[3]
    turn = next(seq for seq, attribute, _ in question_prompts(enc, rec) if attribute == "weather")
    batch = collate([turn], und, gen, enc.pad_id)
    last = len(model.blocks) - 1
    pattern = HookedVLM(model).run_with_patterns(batch, layers=[last])[f"blocks.{last}.attn.hook_pattern"][0, :, -1]
    image = (batch.tags[0] == TAG["image"]).nonzero().flatten()
    icon = image[region_slots(Watch.from_dict(rec["watch"]), "weather", side)]
    mine = rows[(rows["record"] == rec["id"]) & (rows["layer"] == last)].sort_values("head")
    torch.testing.assert_close(torch.tensor(mine["to_region"].to_numpy()), pattern[:, icon].sum(-1).double())
    torch.testing.assert_close(torch.tensor(mine["to_image"].to_numpy()), pattern[:, image].sum(-1).double())
    assert mine["even_share"].iloc[0] == len(icon) / und.num_tokens

    summary = summarize_attention(rows, n_boot=200)
    assert len(summary) == len(model.blocks) * heads
    assert (summary["to_region_lo"] <= summary["to_region"]).all() and (
        summary["to_region"] <= summary["to_region_hi"]
    ).all()
    one = summary[(summary["layer"] == last)].set_index("head")
    by_hand = rows[rows["layer"] == last].groupby("head")
    expected_lift = by_hand["to_region"].sum() / (by_hand.apply(lambda g: (g["to_image"] * g["even_share"]).sum()))
    pd.testing.assert_series_equal(one["region_lift"], expected_lift, check_names=False)
    with pytest.raises(ValueError, match="no understanding record asks 'colour'"):
        answer_attention(model, records, und, gen, enc, "colour")


def test_cli_attend_writes_tables_and_a_figure(trained_runs, tmp_path):
    out = tmp_path / "attend"
    run = trained_runs["vq-vq"].out
    cmd = [
        sys.executable,
        "-m",
        "unilens.cli",
        "attend",
        f"toy={run}",
        "--out",
        str(out),
        "--limit",
        "6",
        "--ablate",
        "1",
    ]
    result = subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert "of the answer's attention on the item" in result.stdout
    summary = pd.read_csv(out / "attention.csv")
    assert set(summary["model"]) == {"toy"} and summary["n_images"].max() <= 6
    assert (out / "attention_rows.csv").is_file() and (out / "attention_weather_weather_region.png").is_file()
    ablation = pd.read_csv(out / "ablation.csv")
    assert (
        len(ablation) == 4 and "none" in set(ablation["condition"]) and "top 1 together" in set(ablation["condition"])
    )
    assert "against nothing zeroed" in result.stdout
    bad = subprocess.run([*cmd[:4], str(tmp_path / "nowhere"), "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode != 0 and "nowhere" in bad.stderr


def _head_share(model, hooked: HookedVLM, batch, layer: int, head: int, where: torch.Tensor) -> torch.Tensor:
    """By hand: what block `layer`'s output projection makes of head `head`'s slice of hook_z at the positions
    `where` marks ((batch, length), bool), the rest zero: the part of the attention output that zeroing the head
    there should remove."""
    attn = model.blocks[layer].self_attn
    _, cache = hooked.run_with_cache(batch, [f"blocks.{layer}.hook_z"])
    z = cache[f"blocks.{layer}.hook_z"]
    heads = slice(head * attn.head_dim, (head + 1) * attn.head_dim)
    only = torch.zeros_like(z)
    only[..., heads][where] = z[..., heads][where]
    with torch.no_grad():
        return attn.o_proj(only) - attn.o_proj(torch.zeros_like(only))


def test_zeroing_a_head_removes_exactly_its_share_of_the_attention_output(loaded_vq_run):
    """Zeroing head h's slice of hook_z at the answer's position equals subtracting what the output projection makes
    of that slice from the block's attention output there: the ablation touches one head at one position."""
    from probes.activations import PROMPT_END, group_mask
    from probes.attention import ablate_heads, summarize_ablation

    built, dataset, und, gen = loaded_vq_run
    model = built.model.eval()
    enc = Encoder(built.tokenizer, und.num_tokens)
    records = [r for r in dataset.test if r["task"] == "vqa" and asks(r, "weather")][:6]
    layer, head = len(model.blocks) - 1, 1
    rows = ablate_heads(model, records, und, gen, enc, "weather", {"one": [(layer, head)]}, batch_size=3)
    assert set(rows["condition"]) == {"none", "one"} and len(rows) == 2 * len(records)

    from models.generate import question_prompts as prompts
    from tasks.world import ATTRIBUTE_VALUES

    seqs = [next(seq for seq, attribute, _ in prompts(enc, r) if attribute == "weather") for r in records]
    batch = collate(seqs, und, gen, enc.pad_id)
    at = group_mask(batch.tags, PROMPT_END).argmax(1)
    hooked = HookedVLM(model)
    rows_of = torch.arange(len(records))
    share = _head_share(model, hooked, batch, layer, head, torch.nn.functional.one_hot(at, batch.tags.shape[1]).bool())
    with torch.no_grad(), hooked.hooks([(f"blocks.{layer}.hook_attn_out", lambda x, _n: x - share)]):
        hidden = model.hidden(batch)
    first = torch.tensor([enc.text(str(v))[0] for v in ATTRIBUTE_VALUES["weather"]])
    logp = torch.log_softmax(model.text_logits(hidden[rows_of, at]).float()[:, first], dim=-1)
    truth = [list(map(str, ATTRIBUTE_VALUES["weather"])).index(r["watch"]["weather"]) for r in records]
    expected = logp[rows_of, torch.tensor(truth)].numpy()
    got = rows[rows["condition"] == "one"]["logp_true"].to_numpy()
    assert abs(got - expected).max() < 1e-4
    none = rows[rows["condition"] == "none"]["logp_true"].to_numpy()
    assert abs(got - none).max() > 1e-6  # the head mattered somewhere: the check above is not vacuous

    summary = summarize_ablation(rows, n_boot=100).set_index("condition")
    assert summary.loc["none", "correct_minus_none"] == 0
    assert summary.loc["one", "logp_true_minus_none"] == pytest.approx((got - none).mean())
    with pytest.raises(ValueError, match="no such"):
        ablate_heads(model, records, und, gen, enc, "weather", {"bad": [(layer, 99)]})


def test_whole_answer_ablation_scores_values_that_share_a_first_token(loaded_vq_run):
    """The corners (top-left / top-right) share their first token: "answer" scoring sums each value's tokens,
    teacher-forced, one unpadded sequence at a time by hand here, and zeroes the head at every position that
    predicts one of them (by hand: its share of the attention output subtracted at those positions only)."""
    from probes.attention import ablate_heads
    from tasks.world import ATTRIBUTE_VALUES

    built, dataset, und, gen = loaded_vq_run
    model = built.model.eval()
    enc = Encoder(built.tokenizer, und.num_tokens)
    question = "weather_pos"
    records = [r for r in dataset.test if r["task"] == "vqa" and asks(r, question)][:3]
    layer, head = len(model.blocks) - 1, 0
    with pytest.raises(ValueError, match="share a first token"):
        ablate_heads(model, records, und, gen, enc, question, {}, scoring="first_token")
    rows = ablate_heads(model, records, und, gen, enc, question, {"one": [(layer, head)]}, batch_size=2)
    assert set(rows["scoring"]) == {"answer"} and len(rows) == 2 * len(records)

    hooked = HookedVLM(model)
    values = [str(v) for v in ATTRIBUTE_VALUES[question]]
    eos = built.tokenizer.eos_token_id
    for condition in ("none", "one"):
        expected = []
        for rec in records:
            prompt = next(seq for seq, attribute, _ in question_prompts(enc, rec) if attribute == question)
            totals = []
            for value in values:
                answer = [*enc.text(value), eos]
                seq = prompt.prefix(len(prompt), "understand")
                seq.add_text(answer, "answer", supervised=True)
                batch = collate([seq], und, gen, enc.pad_id)
                span = slice(len(prompt) - 1, len(seq) - 1)
                hooks = []
                if condition == "one":
                    where = torch.zeros(batch.tags.shape, dtype=torch.bool)
                    where[0, span] = True
                    share = _head_share(model, hooked, batch, layer, head, where)
                    hooks = [(f"blocks.{layer}.hook_attn_out", lambda x, _n, share=share: x - share)]
                with torch.no_grad(), hooked.hooks(hooks):
                    logp = model.text_logits(model.hidden(batch)[0, span]).float().log_softmax(-1)
                totals.append(float(logp[torch.arange(len(answer)), torch.tensor(answer)].sum()))
            truth = values.index(str(rec["watch"][question]))
            expected.append(float(torch.log_softmax(torch.tensor(totals), 0)[truth]))
        got = rows[rows["condition"] == condition]["logp_true"].to_numpy()
        assert abs(got - expected).max() < 1e-4, condition
    moved = rows[rows["condition"] == "one"]["logp_true"].to_numpy() - rows[rows["condition"] == "none"]["logp_true"]
    assert abs(moved.to_numpy()).max() > 1e-6  # the head mattered: the by-hand check of "one" is not vacuous


def test_cli_offers_the_ablation_scorings_the_library_knows():
    """The CLI spells the choices out (importing the library would load torch to build the parser): they must
    stay the library's."""
    from probes.attention import ABLATION_SCORINGS
    from unilens.cli import build_parser

    attend = build_parser()._subparsers._group_actions[0].choices["attend"]
    scoring = next(a for a in attend._actions if a.dest == "scoring")
    assert tuple(scoring.choices) == ABLATION_SCORINGS and scoring.default in ABLATION_SCORINGS
