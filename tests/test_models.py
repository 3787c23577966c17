"""Unified models: presets, adapters, distortions, checkpoints, resume, NaN guard, local HF loading."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from models.build import build_model, load_checkpoint
from models.presets import FreezeConfig, parameter_table
from models.sequence import Encoder, collate
from models.train import TrainConfig, Trainer, batch_indices
from models.unified import AffineDistortion, ModelConfig
from tasks.records import load_dataset
from unilens.config import to_dict
from unilens.errors import UnilensError


def counts(model) -> dict[str, tuple[int, int]]:
    table = parameter_table(model)
    return {r.component: (int(r.trainable), int(r.total)) for r in table.itertuples()}


def expected_lora(model, layers, r) -> int:
    total = 0
    for i, block in enumerate(model.blocks):
        if i not in layers:
            continue
        for name, module in block.named_modules():
            if name.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
                base = getattr(module, "base_layer", module)
                if isinstance(base, torch.nn.Linear):
                    total += r * (base.in_features + base.out_features)
    return total


def test_trainable_parameters_per_preset(tiny_train_config):
    cfg = tiny_train_config()
    n_layers = 2
    results = {}
    for preset, layers in (("adapters", []), ("lora", []), ("lora-layers", [1]), ("full", [])):
        freeze = FreezeConfig(preset=preset, lora_r=4, lora_layers=layers)
        model = build_model(cfg.model, freeze).model
        results[preset] = c = counts(model)
        assert c["vision_in (= gen_in, shared)"][0] == c["vision_in (= gen_in, shared)"][1] > 0
        assert c["gen_head"][0] == c["gen_head"][1] > 0 and c["image_delimiters"][0] == 2 * model.d_model
        if preset == "adapters":
            assert c["llm.base"][0] == 0 and "llm.lora" not in c
        elif preset == "full":
            assert c["llm.base"][0] == c["llm.base"][1]
        else:
            assert c["llm.base"][0] == 0
            want = expected_lora(model, layers or range(n_layers), r=4)
            assert c["llm.lora"][0] == c["llm.lora"][1] == want > 0
    assert results["lora-layers"]["llm.lora"][0] * 2 == results["lora"]["llm.lora"][0]  # one of two layers
    assert results["adapters"]["llm.base"][1] == results["full"]["llm.base"][1]


def test_lora_preset_builds_without_peft_deprecation_warnings(tiny_train_config):
    """get_peft_model reads a property transformers deprecated; the warning it raised on every run is filtered at
    that call alone (other FutureWarnings still show)."""
    import warnings

    cfg = tiny_train_config()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(cfg.model, FreezeConfig(preset="lora", lora_r=4))
        warnings.warn("another deprecation", FutureWarning, stacklevel=1)
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert messages == ["another deprecation"]


def test_preset_errors(tiny_train_config):
    cfg = tiny_train_config()
    with pytest.raises(UnilensError, match="unknown freezing preset"):
        build_model(cfg.model, FreezeConfig(preset="lorax"))
    with pytest.raises(UnilensError, match="needs lora_layers"):
        build_model(cfg.model, FreezeConfig(preset="lora-layers"))
    with pytest.raises(UnilensError, match="outside the LLM's layers"):
        build_model(cfg.model, FreezeConfig(preset="lora-layers", lora_layers=[5]))
    with pytest.raises(UnilensError, match="unknown variant"):
        build_model(ModelConfig(variant="vq-clip", llm=cfg.model.llm), FreezeConfig())


def one_batch(cfg: TrainConfig, built, n=8):
    from models.build import build_spaces
    from tasks.splits import select_arm

    ds = load_dataset(cfg.dataset)
    und, gen = build_spaces(built, cfg.model, ds, cfg.cache_dir)
    records = select_arm(ds.train, cfg.arm)
    enc = Encoder(built.tokenizer, und.num_tokens)
    seqs = [enc.record(r) for r in records[: n // 2] + records[-n // 2 :]]  # understanding and generation
    return collate(seqs, und, gen, enc.pad_id)


def test_shared_and_separate_generation_adapter(tiny_train_config):
    shared = build_model(tiny_train_config("vq-vq").model, FreezeConfig("adapters")).model
    assert shared.gen_in is shared.vision_in
    cfg = tiny_train_config("sem-vq")
    separate = build_model(cfg.model, FreezeConfig("adapters"))
    model = separate.model
    assert model.gen_in is not model.vision_in
    assert model.vision_in.kind == "mlp" and model.gen_in.kind == "linear"  # the paper's adapters per space
    # generation loss reaches gen_in, not vision_in, when separate
    batch = one_batch(cfg, separate)
    batch.labels[:] = -100
    model(batch)["loss"].backward()
    assert model.gen_in.net.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.vision_in.parameters())
    bad = tiny_train_config("sem-vq").model
    bad.share_gen_adapter = "true"
    with pytest.raises(UnilensError, match="share_gen_adapter"):
        build_model(bad, FreezeConfig("adapters"))
    forced = tiny_train_config("vq-vq").model
    forced.share_gen_adapter = "false"
    assert build_model(forced, FreezeConfig("adapters")).model.gen_in is not None
    assert (
        build_model(forced, FreezeConfig("adapters")).model.gen_in
        is not build_model(forced, FreezeConfig("adapters")).model.vision_in
    )


def test_affine_distortion_is_invertible_and_frozen():
    d = AffineDistortion(16, strength=0.5, seed=3)
    x = torch.randn(10, 16)
    y = d(x)
    assert not torch.allclose(x, y)
    assert torch.allclose(d.inverse(y), x, atol=1e-5)
    assert list(d.parameters()) == []  # buffers only: nothing an optimizer could change
    scales = torch.linalg.svdvals(d.A)
    assert scales.min() >= 0.5 - 1e-5 and scales.max() <= 1.5 + 1e-5
    assert torch.equal(AffineDistortion(16, 0.5, 3).A, d.A)  # seeded
    assert torch.equal(AffineDistortion(16, 0.0, 3)(x), x)
    white = torch.randn(200_000, 16, generator=torch.Generator().manual_seed(0))
    for strength in (0.0, 0.5):
        rms = AffineDistortion(16, strength, 3)(white).pow(2).sum(-1).mean().sqrt().item()
        assert AffineDistortion(16, strength, 3).output_rms() == pytest.approx(rms, rel=0.01)
    assert AffineDistortion(16, 0.0, 3).output_rms() == pytest.approx(4.0)
    with pytest.raises(UnilensError):
        AffineDistortion(4, 1.0, 0)


def test_distortion_survives_training_unchanged(tiny_train_config):
    cfg = tiny_train_config("vq-vq", "adapters", epochs=0.35, checkpoint_fractions=[1.0])
    cfg.model.input_distortion = 0.4
    trainer = Trainer(cfg, progress=False)
    before = trainer.model.distort_in.A.clone()
    trainer.train()
    assert torch.equal(before, trainer.model.distort_in.A)
    assert not torch.allclose(before, torch.eye(before.shape[0]))


def llm_base_weights(model) -> dict[str, torch.Tensor]:
    """Base LLM weights with peft's wrapping removed from the names."""
    out = {}
    for name, t in model.llm.state_dict().items():
        if "lora_" in name:
            continue
        out[name.replace("base_model.model.", "").replace(".base_layer", "")] = t.clone()
    return out


@pytest.mark.parametrize("preset", ["adapters", "lora"])
def test_frozen_weights_bit_identical_after_training(tiny_train_config, preset):
    from models.lm import load_llm

    cfg = tiny_train_config("vq-vq", preset, epochs=2.0, lr_adapters=3e-3, lr_llm=3e-3)
    trainer = Trainer(cfg, progress=False)
    adapter_before = trainer.model.vision_in.net.weight.clone()
    trainer.train()
    fresh = load_llm(cfg.model.llm)[0].state_dict()
    after = llm_base_weights(trainer.model)
    assert set(after) == set(fresh)
    assert all(torch.equal(after[k], fresh[k]) for k in fresh)
    assert not torch.equal(adapter_before, trainer.model.vision_in.net.weight)  # the adapters did train
    losses = [json.loads(x)["loss"] for x in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 36 and sum(losses[-5:]) < sum(losses[:5]) - 0.5


def test_all_variants_train_under_both_presets_and_reload(tiny_train_config):
    for variant in ("sem-sem", "sem-vq", "vq-sem"):
        for preset in ("adapters", "lora"):
            cfg = tiny_train_config(variant, preset, epochs=0.35, checkpoint_fractions=[1.0])
            trainer = Trainer(cfg, progress=False)
            trainer.train()
            ckpt = trainer.checkpoints()[-1]
            manifest = json.loads((ckpt / "manifest.json").read_text())
            assert manifest["variant"] == variant and manifest["preset"] == preset
            assert (ckpt / "lora" / "adapter_config.json").is_file() == (preset == "lora")
            # reproducible from the checkpoint folder alone
            built, _ = load_checkpoint(ckpt)
            trainer.model.eval()
            batch = one_batch(cfg, trainer.built)
            with torch.no_grad():
                a = trainer.model(batch)["loss"]
                b = built.model(batch)["loss"]
            assert torch.allclose(a, b, atol=1e-6), (variant, preset, a, b)


def test_checkpoint_refuses_changed_dependencies(tiny_train_config, tiny_embedded, tmp_path):
    from conftest import copy_tree

    from models.lm import load_llm

    llm_copy = copy_tree(tiny_embedded / "lm", tmp_path / "lm_copy")
    cfg = tiny_train_config("vq-vq", "adapters", epochs=0.25, checkpoint_fractions=[1.0])
    cfg.model.llm = str(llm_copy)
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    ckpt = trainer.checkpoints()[-1]
    load_checkpoint(ckpt)  # fine while nothing changed
    # a tokenizer edited under the checkpoint (the weights untouched) is refused, and accepted once put back
    tok_config = llm_copy / "tokenizer_config.json"
    original = tok_config.read_text()
    tok_config.write_text(json.dumps({**json.loads(original), "model_max_length": 7}))
    with pytest.raises(UnilensError, match=r"tokenizer files in .* changed"):
        load_checkpoint(ckpt)
    tok_config.write_text(original)
    load_checkpoint(ckpt)
    model, _tok = load_llm(llm_copy)
    with torch.no_grad():
        model.get_input_embeddings().weight[0, 0] += 1.0
    model.save_pretrained(str(llm_copy))
    with pytest.raises(UnilensError, match=r"llm at .* has hash"):
        load_checkpoint(ckpt)


def test_checkpoint_written_under_the_legacy_hash_rule_still_loads_and_keeps_its_build_tag(tiny_train_config):
    from models.checkpoint import read_manifest
    from models.features import legacy_encoder_hash
    from models.fingerprint import dependency_label
    from unilens.io import atomic_write_json

    cfg = tiny_train_config("vq-sem", "adapters", epochs=0.25, checkpoint_fractions=[1.0])
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    ckpt = trainer.checkpoints()[-1]
    manifest = read_manifest(ckpt)
    today = dependency_label(manifest["dependencies"])
    legacy = json.loads(json.dumps(manifest))
    for what, entry in legacy["dependencies"].items():
        if what != "dataset":
            old = legacy_encoder_hash(entry["path"])
            assert old != entry["hash"], what  # config.json's bytes made the difference
            entry["hash"] = old
    del legacy["dependencies"]["llm"]["tokenizer"]  # not recorded then
    atomic_write_json(ckpt / "manifest.json", legacy)
    load_checkpoint(ckpt)  # accepted: the folders are the ones it recorded, under the old rule
    assert dependency_label(legacy["dependencies"]) == today
    legacy["dependencies"]["llm"]["hash"] = "0" * 64
    atomic_write_json(ckpt / "manifest.json", legacy)
    with pytest.raises(UnilensError, match=r"llm at .* has hash"):
        load_checkpoint(ckpt)


def test_run_folder_refuses_a_different_config(tiny_train_config):
    cfg = tiny_train_config("vq-vq", "adapters", epochs=0.25, checkpoint_fractions=[1.0])
    Trainer(cfg, progress=False).train()
    other = tiny_train_config("vq-vq", "lora", epochs=0.25, checkpoint_fractions=[1.0], out=cfg.out)
    with pytest.raises(UnilensError, match=r"freeze\.preset"):
        Trainer(other, progress=False).train()


def test_lr_schedule_constant_holds_the_rate_and_older_run_folders_still_resume(tiny_train_config):
    import yaml

    from models.train import lr_factor

    assert lr_factor(0, 100, 4) == 0.25 and lr_factor(3, 100, 4) == 1.0  # linear warm-up
    assert lr_factor(52, 100, 4) == pytest.approx(0.5) and lr_factor(99, 100, 4) < 1e-3  # cosine to zero
    assert lr_factor(0, 100, 4, "constant") == 0.25 and lr_factor(99, 100, 4, "constant") == 1.0
    with pytest.raises(UnilensError, match="unknown lr_schedule 'linear'"):
        Trainer(tiny_train_config("vq-vq", "adapters", name="bad", lr_schedule="linear"), progress=False)
    rates = {}
    for kind in ("cosine", "constant"):
        cfg = tiny_train_config(
            "vq-vq", "adapters", name=kind, epochs=1.0, checkpoint_fractions=[1.0], lr_schedule=kind
        )
        Trainer(cfg, progress=False).train()
        rates[kind] = [json.loads(x)["lr"] for x in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    assert len(rates["constant"]) > 4
    assert rates["constant"][-1] == pytest.approx(rates["constant"][len(rates["constant"]) // 2])
    assert rates["cosine"][-1] < 0.1 * rates["constant"][-1]
    # a run folder written before lr_schedule existed is the cosine run it was, and is not refused
    config = Path(tiny_train_config("vq-vq", "adapters", name="cosine").out) / "config.yaml"
    old = yaml.safe_load(config.read_text())
    del old["lr_schedule"]
    config.write_text(yaml.safe_dump(old, sort_keys=False))
    cfg = tiny_train_config("vq-vq", "adapters", name="cosine", epochs=1.0, checkpoint_fractions=[1.0])
    Trainer(cfg, progress=False).train()
    constant = tiny_train_config("vq-vq", "adapters", name="cosine", epochs=1.0, checkpoint_fractions=[1.0])
    constant.lr_schedule = "constant"
    with pytest.raises(UnilensError, match="lr_schedule"):
        Trainer(constant, progress=False).train()


def test_bf16_precision_autocasts_on_cpu_and_trains_like_fp32(tiny_train_config):
    from models.device import autocast, uses_bf16

    cpu = torch.device("cpu")
    assert not uses_bf16(cpu) and uses_bf16(cpu, "bf16") and uses_bf16(torch.device("cuda"))
    assert not uses_bf16(torch.device("cuda"), "fp32")
    with autocast(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(UnilensError, match="unknown precision 'fp16'"):
        tiny_train_config("vq-vq", "adapters", name="bad", precision="fp16")
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = tiny_train_config(
            "sem-sem", "lora", name=precision, epochs=1.0, checkpoint_fractions=[1.0], precision=precision
        )
        Trainer(cfg, progress=False).train()
        losses[precision] = [json.loads(x)["loss"] for x in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
        assert all(torch.isfinite(torch.tensor(losses[precision])))
    # the same data order and start: bf16 matmuls move the first loss by rounding only
    assert losses["bf16"][0] == pytest.approx(losses["fp32"][0], rel=0.02)
    assert losses["bf16"][-1] < losses["bf16"][0]


def final_state(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    last = sorted((out / "checkpoints").glob("step-*"))[-1]
    return load_file(str(last / "trainable.safetensors"))


@pytest.mark.parametrize("generation_noise", [False, True])
def test_resume_after_interruption_matches_uninterrupted(tiny_train_config, generation_noise):
    """Bit for bit, also with corrupted teacher forcing and prompt dropout (both random, both drawn anew)."""
    kw = dict(epochs=1.0, checkpoint_fractions=[0.5, 1.0])
    full = tiny_train_config("vq-vq", "lora", name="full", **kw)
    part = tiny_train_config("vq-vq", "lora", name="part", **kw)
    for cfg in (full, part):
        cfg.model.gen_input_corruption = 0.3 if generation_noise else 0.0
        cfg.model.gen_prompt_dropout = 0.2 if generation_noise else 0.0
    Trainer(full, progress=False).train()
    trainer = Trainer(part, progress=False)
    half = min(trainer.ckpt_steps)
    # a crash after the first checkpoint: training stops there, and one stray log line was written past it
    assert trainer.train(until_step=half + 1) == {"stopped_at": half + 1}
    log = Path(part.out) / "log.jsonl"
    assert len(log.read_text().splitlines()) == half + 1
    Trainer(part, progress=False).train()  # a fresh process-equivalent resumes from the checkpoint
    a, b = final_state(Path(full.out)), final_state(Path(part.out))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    la = [json.loads(x)["loss"] for x in (Path(full.out) / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in log.read_text().splitlines()]
    assert la == lb


@pytest.mark.slow
def test_kill_dash_nine_then_resume_matches(tiny_train_config, tmp_path):
    kw = dict(epochs=6.0, checkpoint_fractions=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    full = tiny_train_config("vq-vq", "lora", name="full", **kw)
    Trainer(full, progress=False).train()
    killed = tiny_train_config("vq-vq", "lora", name="killed", **kw)
    cfg_path = tmp_path / "killed.yaml"
    cfg_path.write_text(yaml.safe_dump(to_dict(killed)))
    cmd = [sys.executable, "-m", "unilens.cli", "train", str(cfg_path), "--quiet"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpts = Path(killed.out) / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(ckpts.glob("step-*"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (Path(killed.out) / "summary.json").exists(), "the run finished before it could be killed"
    assert subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode == 0
    a, b = final_state(Path(full.out)), final_state(Path(killed.out))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_guard_stops_with_step_and_cause(tiny_train_config):
    cfg = tiny_train_config(
        "sem-sem", "full", epochs=2.0, lr_llm=1e5, lr_adapters=1e5, checkpoint_fractions=[0.1, 1.0], max_grad_norm=1e9
    )
    trainer = Trainer(cfg, progress=False)
    with pytest.raises(UnilensError, match=r"(loss is nan|loss exploded).*step \d+.*learning rate") as err:
        trainer.train()
    good = trainer.checkpoints()
    assert all((c / "manifest.json").is_file() for c in good)
    if good:
        assert str(good[-1]) in str(err.value)


def test_local_siglip_and_qwen2_load_through_the_real_path(tiny_embedded, tmp_path):
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    from models.encoders.semantic import load_semantic

    sig_dir = tmp_path / "siglip"
    SiglipVisionModel(
        SiglipVisionConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
        )
    ).save_pretrained(str(sig_dir))
    enc = load_semantic(sig_dir)
    assert enc.source == "siglip" and enc.num_tokens == 16 and enc.feature_dim == 32
    feats = enc.features(torch.zeros(2, 3, 32, 32))
    assert feats.shape == (2, 16, 32)

    tok = AutoTokenizer.from_pretrained(str(tiny_embedded / "lm"))
    qwen_dir = tmp_path / "qwen2"
    Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            pad_token_id=tok.pad_token_id,
        )
    ).save_pretrained(str(qwen_dir))
    tok.save_pretrained(str(qwen_dir))
    cfg = TrainConfig(
        dataset=str(tiny_embedded / "data"),
        out=str(tmp_path / "run"),
        model=ModelConfig(
            variant="sem-vq", llm=str(qwen_dir), semantic_encoder=str(sig_dir), vq_encoder=str(tiny_embedded / "vq")
        ),
        freeze=FreezeConfig("lora", lora_r=2),
        batch_size=8,
        epochs=0.2,
        checkpoint_fractions=[1.0],
        cache_dir=str(tmp_path / "cache"),
    )
    trainer = Trainer(cfg, progress=False)
    assert type(trainer.model.base_llm).__name__ == "Qwen2ForCausalLM"
    summary = trainer.train()
    assert summary["steps"] >= 1
    _built, manifest = load_checkpoint(trainer.checkpoints()[-1])
    assert manifest["dependencies"]["semantic_encoder"]["path"] == str(sig_dir.resolve())


def test_missing_llm_folder_is_a_clear_error(tiny_train_config, tmp_path):
    cfg = tiny_train_config()
    cfg.model.llm = str(tmp_path / "nowhere")
    with pytest.raises(UnilensError, match="no LLM at"):
        build_model(cfg.model, FreezeConfig())


def test_text_pretraining_sees_the_unified_models_exact_token_ids(tiny_embedded):
    """The LLM is pre-trained on the ids the unified model later sees around its images, not a re-tokenization."""
    from models.lm import load_llm
    from models.sequence import TEXT

    _, tok = load_llm(tiny_embedded / "lm")
    ds = load_dataset(tiny_embedded / "data")
    with_images, text_only = Encoder(tok, 16), Encoder(tok, 0, images=False)
    for rec in ds.train[:30]:
        full = with_images.record(rec)
        text_ids = [i for i, k in zip(full.ids, full.kind, strict=True) if k == TEXT]
        assert text_only.record(rec).ids == text_ids
        assert len(full) > len(text_ids)  # every record carries an image


def test_copy_task_pretraining_reports_in_context_copying(tiny_embedded, tmp_path):
    """The copying task joins text pre-training when asked; its measure is in every LLM report; bad shares are named."""
    import numpy as np

    from models.lm import LMConfig, copy_sequences, pretrain_lm

    x = copy_sequences(3, 5, 40, 4, np.random.default_rng(0))
    assert x.shape == (3, 10) and (x[:, :5] == x[:, 5:]).all() and x.min() >= 4 and x.max() < 40
    base = dict(dataset=str(tiny_embedded / "data"), vocab_size=300, d_model=32, n_layers=2, n_heads=2, d_ff=64)
    report = pretrain_lm(LMConfig(**base, steps=4, batch_size=8, copy_fraction=0.5, copy_span=6), tmp_path / "lm")
    assert {"copy_first_nll", "copy_second_nll", "copy_gain"} <= set(report)
    assert abs(report["copy_gain"]) < 1.0  # four steps teach no copying: the measure reads about zero
    with pytest.raises(UnilensError, match="copy_fraction"):
        pretrain_lm(LMConfig(**base, steps=1, copy_fraction=1.0), tmp_path / "bad")

    class Copier(torch.nn.Module):  # predicts each repeated token from its first showing, knows nothing else
        def forward(self, input_ids):
            b, n = input_ids.shape
            logits = torch.zeros(b, n, 50)
            for t in range(16 - 1, n - 1):
                logits[torch.arange(b), t, input_ids[:, t + 1 - 16]] = 30.0
            return type("Out", (), {"logits": logits})()

    from models.lm import copy_gain

    perfect = copy_gain(Copier(), 50, 4, span=16)
    assert perfect["copy_second_nll"] < 1e-3 and abs(perfect["copy_first_nll"] - np.log(50)) < 1e-3


def test_run_and_embedded_folders_are_created_with_their_parents(tiny_train_config, tmp_path):
    """A fresh clone has no runs/ folder: training and the embedded build make it."""
    cfg = tiny_train_config("vq-vq", "adapters", epochs=0.1, checkpoint_fractions=[1.0])
    cfg.out = str(tmp_path / "runs" / "train" / "deep")
    Trainer(cfg, progress=False).train()
    assert (tmp_path / "runs" / "train" / "deep" / "summary.json").is_file()


def test_feature_norms_are_fitted_on_training_images_and_saved(tiny_train_config):
    """Encoder features are standardised with training-set statistics that travel inside every checkpoint."""
    from models.evaluate import checkpoints_of

    cfg = tiny_train_config("sem-sem", "adapters", epochs=0.5)
    trainer = Trainer(cfg, progress=False)
    images = sorted({r["image"] for r in trainer.records})
    raw = torch.cat([trainer.und_space.inputs(i) for i in images])
    z = trainer.model.norm_in(raw)
    assert z.mean(0).abs().max() < 1e-3 and (z.std(0) - 1).abs().max() < 1e-2
    # raw semantic features are far from standardised: the fix matters
    assert raw.mean(0).abs().max() > 0.5 or (raw.std(0) - 1).abs().max() > 0.5
    trainer.train()
    built, _ = load_checkpoint(checkpoints_of(cfg.out)[0])
    assert torch.equal(built.model.norm_in.mean, trainer.model.norm_in.mean.cpu())
    assert torch.equal(built.model.norm_out.std, trainer.model.norm_out.std.cpu())


def test_checkpoint_without_feature_norms_is_refused_with_the_fix(tiny_train_config):
    from safetensors.torch import load_file, save_file

    from models.evaluate import checkpoints_of

    cfg = tiny_train_config("vq-vq", "adapters", epochs=0.5)
    Trainer(cfg, progress=False).train()
    ckpt = checkpoints_of(cfg.out)[0]
    state = {k: v for k, v in load_file(str(ckpt / "trainable.safetensors")).items() if not k.startswith("norm_")}
    save_file(state, str(ckpt / "trainable.safetensors"))
    with pytest.raises(UnilensError, match="retrain"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("variant", ["sem-sem", "vq-vq", "sem-vq"])
def test_adapters_start_at_the_token_embedding_scale(tiny_train_config, variant):
    built = build_model(tiny_train_config(variant).model, FreezeConfig("adapters"))
    model = built.model
    token_rms = model.base_llm.get_input_embeddings().weight.pow(2).mean().sqrt()
    for adapter in {model.vision_in, model.gen_in}:
        d_in = (adapter.net if isinstance(adapter.net, torch.nn.Linear) else adapter.net[0]).in_features
        out = adapter(torch.randn(512, d_in, generator=torch.Generator().manual_seed(5)))
        assert abs(out.pow(2).mean().sqrt() / token_rms - 1) < 0.1


def test_semantic_generation_space_round_trips(tiny_train_config):
    cfg = tiny_train_config("sem-sem", "adapters", epochs=0.5)
    cfg.model.output_distortion = 0.3
    trainer = Trainer(cfg, progress=False)
    model = trainer.model
    x = trainer.gen_space.inputs(trainer.records[0]["image"])
    assert torch.allclose(model.gen_output_to_space(model.gen_target(x)), x, atol=1e-3)


def test_config_scalars_are_checked_and_yaml_exponents_read_as_numbers(tmp_path):
    from unilens.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("lr_adapters: 3e-3\nepochs: 2\nmodel: {share_gen_adapter: true}\n")
    cfg = load_config(TrainConfig, path)
    assert cfg.lr_adapters == 0.003 and cfg.epochs == 2.0 and cfg.model.share_gen_adapter == "true"
    for bad, field in (("lr_llm: fast", "lr_llm"), ("batch_size: 8.5", "batch_size"), ("seed: [1]", "seed")):
        path.write_text(bad + "\n")
        with pytest.raises(UnilensError, match=field):
            load_config(TrainConfig, path)


def test_gen_input_corruption_replaces_training_inputs_only(tiny_train_config):
    """In training mode about the asked fraction of generated-image inputs become other tokens of the batch, the
    targets untouched; in eval mode (decoding, scoring) nothing changes. A rate outside [0, 1) is refused."""
    from models.sequence import GEN_IMAGE
    from models.unified import corrupt_rows

    x = torch.randn(4000, 8)
    torch.manual_seed(0)
    y = corrupt_rows(x, 0.3)
    changed = (y != x).any(-1).float().mean().item()
    assert 0.27 < changed < 0.33  # a donor can be the row itself (1/4000)
    exact = "donot_use_mm_for_euclid_dist"
    assert torch.cdist(y[(y != x).any(-1)], x, compute_mode=exact).min(-1).values.max() == 0  # real tokens only

    cfg = tiny_train_config("vq-vq", "adapters", epochs=0.5)
    cfg.model.gen_input_corruption = 0.5
    trainer = Trainer(cfg, progress=False)
    model, records = trainer.model, [r for r in trainer.records if r["task"] == "generation"][:4]
    enc = Encoder(trainer.built.tokenizer, trainer.gen_space.num_tokens)
    batch = collate([enc.record(r) for r in records], trainer.und_space, trainer.gen_space, enc.pad_id)
    targets = batch.gen_targets.clone()
    model.eval()
    assert torch.equal(model.embed(batch), model.embed(batch))
    clean = model.embed(batch)
    model.train()
    noisy = model.embed(batch)
    gen_rows = batch.kind == GEN_IMAGE
    moved = (noisy[gen_rows] != clean[gen_rows]).any(-1).float().mean().item()
    assert 0.3 < moved < 0.7
    assert torch.equal(noisy[~gen_rows], clean[~gen_rows]) and torch.equal(batch.gen_targets, targets)
    with pytest.raises(UnilensError, match="gen_input_corruption"):
        ModelConfig(gen_input_corruption=1.0)


def test_gen_prompt_dropout_swaps_generation_prompts_per_step_reproducibly(tiny_train_config):
    """About the asked fraction of generation records in a step carry the attribute-free request; the draw is a
    function of (seed, step), understanding records never change, and rate 0 leaves every batch as it was."""
    from tasks.templates import UNCONDITIONAL_REQUEST

    cfg = tiny_train_config("vq-vq", "adapters", epochs=2.0)
    cfg.model.gen_prompt_dropout = 0.5
    trainer = Trainer(cfg, progress=False)
    request = trainer.encoder_gen.text(UNCONDITIONAL_REQUEST)
    dropped = kept = 0
    for step in range(trainer.total_steps):
        seqs = trainer.step_sequences(step)
        assert [s.ids for s in seqs] == [s.ids for s in trainer.step_sequences(step)]
        plain = [trainer.sequences[i] for i in batch_indices(step, len(trainer.sequences), cfg.batch_size, cfg.seed)]
        for seq, original in zip(seqs, plain, strict=True):
            assert seq.image == original.image
            if original.context == "understand":
                assert seq is original
            elif seq is original:
                kept += 1
            else:
                dropped += 1
                assert contains(seq.ids, request) and not contains(original.ids, request)
    assert dropped + kept > 40 and 0.3 < dropped / (dropped + kept) < 0.7
    cfg0 = tiny_train_config("vq-vq", "adapters", epochs=2.0, name="no-dropout")
    trainer0 = Trainer(cfg0, progress=False)
    idx = batch_indices(3, len(trainer0.sequences), cfg0.batch_size, cfg0.seed)
    assert trainer0.step_sequences(3) == [trainer0.sequences[i] for i in idx] and not trainer0.unconditional


def contains(ids: list[int], part: list[int]) -> bool:
    return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def test_text_loss_weights_give_every_answer_one_unit():
    from models.sequence import text_loss_weights

    x = -100
    labels = torch.tensor([[x, 5, 6, 7, x, x, 8, x], [9, x, 4, 4, 4, 4, x, x]])
    answer = text_loss_weights(labels, "answer")
    expected = torch.tensor([[0, 1 / 3, 1 / 3, 1 / 3, 0, 0, 1, 0], [1, 0, 0.25, 0.25, 0.25, 0.25, 0, 0]])
    assert torch.allclose(answer, expected)
    assert answer.sum().item() == pytest.approx(4.0)  # four answers
    assert torch.equal(text_loss_weights(labels, "token"), (labels != -100).float())
    # a run that ends one row and one that starts the next stay two answers
    assert text_loss_weights(torch.tensor([[x, 1], [2, x]]), "answer").tolist() == [[0, 1], [1, 0]]
    with pytest.raises(UnilensError, match=r"unknown text_loss_unit 'word'.*token"):
        text_loss_weights(labels, "word")
    with pytest.raises(UnilensError, match="text_loss_unit"):
        TrainConfig(text_loss_unit="word")


def test_answer_unit_loss_is_the_mean_of_per_answer_means(tiny_train_config):
    import torch.nn.functional as F

    from models.sequence import text_loss_weights

    cfg = tiny_train_config("vq-vq", "lora")
    built = build_model(cfg.model, cfg.freeze)
    batch = one_batch(cfg, built, n=6)
    model = built.model.eval()
    with torch.no_grad():
        h = model.hidden(batch)
        token_ce = F.cross_entropy(model.text_logits(h).flatten(0, 1).float(), batch.labels.flatten(), reduction="none")
        token_ce = token_ce.reshape(batch.labels.shape)
        per_answer = []
        for row, ce in zip(batch.labels, token_ce, strict=True):
            run: list[float] = []
            for label, value in zip(row.tolist(), ce.tolist(), strict=True):
                if label != -100:
                    run.append(value)
                elif run:
                    per_answer.append(sum(run) / len(run))
                    run = []
            if run:
                per_answer.append(sum(run) / len(run))
        weights = text_loss_weights(batch.labels, "answer")
        out = model(batch, text_weights=weights)
        plain = model(batch)
    assert len(per_answer) > 6  # understanding records hold several answers each
    assert out["text_loss"].item() == pytest.approx(sum(per_answer) / len(per_answer), rel=1e-5)
    assert plain["text_loss"].item() == pytest.approx(token_ce[batch.labels != -100].mean().item(), rel=1e-5)
    assert out["text_loss"].item() != pytest.approx(plain["text_loss"].item(), rel=1e-3)
    assert torch.equal(out["image_loss"], plain["image_loss"])


def test_training_with_the_answer_unit_learns_and_resumes_under_its_config(tiny_train_config):
    cfg = tiny_train_config("vq-vq", "lora", name="answer-unit", epochs=1.0, checkpoint_fractions=[1.0])
    cfg.text_loss_unit = "answer"
    Trainer(cfg, progress=False).train()
    log = [json.loads(x) for x in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["text_loss"])) for r in log)
    assert sum(r["text_loss"] for r in log[-3:]) < sum(r["text_loss"] for r in log[:3])
    assert yaml.safe_load((Path(cfg.out) / "config.yaml").read_text())["text_loss_unit"] == "answer"
    token = tiny_train_config("vq-vq", "lora", name="answer-unit", epochs=1.0, checkpoint_fractions=[1.0])
    with pytest.raises(UnilensError, match="text_loss_unit"):
        Trainer(token, progress=False).train()


def first_losses(out: str | Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (Path(out) / "log.jsonl").read_text().splitlines()]


def test_init_from_starts_at_the_earlier_runs_weights_and_resumes_from_its_own(tiny_train_config):
    """A curriculum's second stage: step 0 loads the first stage's weights (its loss starts where that run ended,
    below a fresh start's), the manifest names them, and a killed second stage resumes from its own checkpoint."""
    stage1 = tiny_train_config("vq-vq", "lora", name="stage1", epochs=1.0, checkpoint_fractions=[1.0])
    Trainer(stage1, progress=False).train()
    kw = dict(epochs=1.0, checkpoint_fractions=[0.5, 1.0], seed=1)
    fresh = tiny_train_config("vq-vq", "lora", name="fresh", **kw)
    warm = tiny_train_config("vq-vq", "lora", name="warm", init_from=stage1.out, **kw)
    warm.model.gen_prompt_dropout = 0.1  # a training-only setting may change between stages
    trainer = Trainer(warm, progress=False)
    assert trainer.train(until_step=0) == {"stopped_at": 0}
    loaded = {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}
    stage1_state = final_state(Path(stage1.out))
    assert all(torch.equal(loaded[n], stage1_state[n]) for n in loaded)
    Trainer(fresh, progress=False).train()
    Trainer(warm, progress=False).train()
    assert first_losses(warm.out)[0] < first_losses(fresh.out)[0] - 0.1
    manifest = json.loads((sorted((Path(warm.out) / "checkpoints").glob("step-*"))[-1] / "manifest.json").read_text())
    last1 = sorted((Path(stage1.out) / "checkpoints").glob("step-*"))[-1]
    assert manifest["init_from"]["path"] == str(last1.resolve()) and manifest["init_from"]["step"] > 0
    # killed after its first checkpoint, the second stage resumes from that checkpoint, not from stage 1
    part = tiny_train_config("vq-vq", "lora", name="warm-part", init_from=stage1.out, **kw)
    part.model.gen_prompt_dropout = 0.1
    trainer = Trainer(part, progress=False)
    trainer.train(until_step=min(trainer.ckpt_steps))
    Trainer(part, progress=False).train()
    a, b = final_state(Path(warm.out)), final_state(Path(part.out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first_losses(part.out) == first_losses(warm.out)


def fresh_and_warm_at_step_0(make, variant: str, source: str, names: tuple[str, str], **kw):
    """Two runs of `variant` at step 0, one fresh and one warm-started from `source`, and their trainable tensors:
    (fresh trainer, warm trainer, warm config, fresh tensors, warm tensors)."""
    fresh = Trainer(make(variant, "lora", name=names[0], **kw), progress=False)
    warm_cfg = make(variant, "lora", name=names[1], init_from=source, **kw)
    warm = Trainer(warm_cfg, progress=False)
    fresh.train(until_step=0)
    warm.train(until_step=0)
    trainable = [{n: p.detach() for n, p in t.model.named_parameters() if p.requires_grad} for t in (fresh, warm)]
    return fresh, warm, warm_cfg, *trainable


def test_init_from_an_adapters_run_loads_its_adapters_and_starts_the_lora_fresh(tiny_train_config):
    """A first stage with the LLM frozen, then LoRA: the adapters, head and statistics come from the first stage,
    the LoRA tensors are those of a fresh run with the same seed, and the manifest counts them."""
    stage1 = tiny_train_config("vq-vq", "adapters", name="adapters-stage", epochs=1.0, checkpoint_fractions=[1.0])
    Trainer(stage1, progress=False).train()
    kw = dict(epochs=0.5, checkpoint_fractions=[1.0], seed=1)
    _, warm, warm_cfg, fresh_params, warm_params = fresh_and_warm_at_step_0(
        tiny_train_config, "vq-vq", stage1.out, ("lora-fresh", "lora-warm"), **kw
    )
    buffers = dict(warm.model.named_buffers())
    stage1_state = final_state(Path(stage1.out))
    lora = sorted(set(warm_params) - set(stage1_state))
    assert lora and all("lora_" in n for n in lora)
    assert all(torch.equal(warm_params.get(n, buffers.get(n)), v) for n, v in stage1_state.items())
    assert all(torch.equal(warm_params[n], fresh_params[n]) for n in lora)
    assert not all(torch.equal(warm_params[n], fresh_params[n]) for n in stage1_state if n in warm_params)
    Trainer(warm_cfg, progress=False).train()
    last = sorted((Path(warm_cfg.out) / "checkpoints").glob("step-*"))[-1]
    assert json.loads((last / "manifest.json").read_text())["init_from"]["fresh_tensors"] == len(lora)


def test_init_from_an_understanding_only_run_may_change_the_output_space(tiny_train_config):
    """sem-sem trained on understanding alone, then sem-vq: the understanding side (adapter, positions, LoRA) comes
    from the first stage, the generation side is that of a fresh sem-vq run with the same seed, and the manifest
    names the earlier variant. A first stage that trained generation too may switch only when asked to
    (init_fresh_generation), and then its generation side is not loaded either."""
    from tasks.splits import ArmConfig

    stage1 = tiny_train_config(
        "sem-sem", "lora", name="und-stage", epochs=0.5, checkpoint_fractions=[1.0], arm=ArmConfig(mixture="und-only")
    )
    Trainer(stage1, progress=False).train()
    kw = dict(epochs=0.25, checkpoint_fractions=[1.0], seed=1)
    fresh, warm, warm_cfg, fresh_params, warm_params = fresh_and_warm_at_step_0(
        tiny_train_config, "sem-vq", stage1.out, ("semvq-fresh", "semvq-warm"), **kw
    )
    stage1_state = final_state(Path(stage1.out))
    generation = sorted(n for n in warm_params if n.startswith(("gen_in.", "gen_head.", "gen_pos.")))
    understanding = sorted(set(warm_params) - set(generation))
    assert generation and any(n.startswith("llm.") for n in understanding) and "vision_in.net.0.weight" in understanding
    assert all(torch.equal(warm_params[n], stage1_state[n]) for n in understanding)
    assert not all(torch.equal(warm_params[n], fresh_params[n]) for n in understanding)
    assert all(torch.equal(warm_params[n], fresh_params[n]) for n in generation)
    assert torch.equal(warm.model.norm_in.mean, stage1_state["norm_in.mean"])
    assert torch.equal(warm.model.norm_out.mean, fresh.model.norm_out.mean)  # VQ statistics, fitted by this run
    Trainer(warm_cfg, progress=False).train()
    last = sorted((Path(warm_cfg.out) / "checkpoints").glob("step-*"))[-1]
    assert json.loads((last / "manifest.json").read_text())["init_from"]["variant"] == "sem-sem"
    # the same variant with whitened generation features is another output side too
    whiten_cfg = tiny_train_config("sem-sem", "lora", name="semsem-whiten-out", init_from=stage1.out, **kw)
    whiten_cfg.model.gen_feature_norm = "whiten"
    whitened = Trainer(whiten_cfg, progress=False)
    whitened.train(until_step=0)
    params = {n: p.detach() for n, p in whitened.model.named_parameters() if p.requires_grad}
    shared = [n for n in params if not n.startswith(("gen_in.", "gen_head.", "gen_pos."))]
    assert "vision_in.net.0.weight" in shared and all(torch.equal(params[n], stage1_state[n]) for n in shared)
    assert torch.equal(whitened.model.norm_in.mean, stage1_state["norm_in.mean"])
    basis = whitened.model.norm_out.basis
    assert not torch.allclose(basis, torch.eye(len(basis)))  # this run's own whitening, not the first stage's
    mixed = tiny_train_config("sem-sem", "lora", name="mixed-stage", epochs=0.25, checkpoint_fractions=[1.0])
    Trainer(mixed, progress=False).train()
    for variant, name in (("sem-vq", "from-mixed"), ("vq-sem", "other-input")):
        source = mixed.out if name == "from-mixed" else stage1.out
        cfg = tiny_train_config(variant, "lora", name=name, init_from=source, **kw)
        hint = "set init_fresh_generation: true" if name == "from-mixed" else r"model\.variant"
        with pytest.raises(UnilensError, match=hint):
            Trainer(cfg, progress=False).train()
    # asked for explicitly, a run that trained generation may switch too; its generation side is left fresh
    warm_cfg = tiny_train_config("sem-vq", "lora", name="from-mixed-fresh", init_from=mixed.out, **kw)
    warm_cfg.init_fresh_generation = True
    warm = Trainer(warm_cfg, progress=False)
    warm.train(until_step=0)
    warm_params = {n: p.detach() for n, p in warm.model.named_parameters() if p.requires_grad}
    mixed_state = final_state(Path(mixed.out))
    assert all(torch.equal(warm_params[n], mixed_state[n]) for n in understanding)
    assert all(torch.equal(warm_params[n], fresh_params[n]) for n in generation)
    Trainer(warm_cfg, progress=False).train()
    last = sorted((Path(warm_cfg.out) / "checkpoints").glob("step-*"))[-1]
    record = json.loads((last / "manifest.json").read_text())["init_from"]
    assert record["variant"] == "sem-sem" and record["fresh_generation"] is True
    with pytest.raises(UnilensError, match="set init_from too"):
        tiny_train_config("sem-vq", "lora", name="no-source", init_fresh_generation=True)


def test_init_fresh_understanding_keeps_the_generation_side_for_another_input_space(tiny_train_config):
    """sem-sem trained on generation alone, then vq-sem: the LLM's LoRA, <boi>/<eoi>, the generation head, positions
    and statistics come from the first stage, and so does the generation adapter (sem-sem's one shared adapter);
    the VQ input adapter, its positions and statistics are those of a fresh vq-sem run with the same seed. The switch
    is refused where the output space differs or the new run would share its adapter."""
    from tasks.splits import ArmConfig

    stage1 = tiny_train_config(
        "sem-sem", "lora", name="gen-stage", epochs=0.5, checkpoint_fractions=[1.0], arm=ArmConfig(mixture="gen-only")
    )
    stage1.model.image_positions = "slot"
    Trainer(stage1, progress=False).train()
    stage1_state = final_state(Path(stage1.out))
    kw = dict(epochs=0.25, checkpoint_fractions=[1.0], seed=1)
    fresh = Trainer(tiny_train_config("vq-sem", "lora", name="vqsem-fresh", **kw), progress=False)
    warm_cfg = tiny_train_config("vq-sem", "lora", name="vqsem-warm", init_from=stage1.out, **kw)
    warm_cfg.init_fresh_understanding = True
    for cfg in (fresh.cfg, warm_cfg):
        cfg.model.image_positions = "slot"
    fresh = Trainer(fresh.cfg, progress=False)
    warm = Trainer(warm_cfg, progress=False)
    fresh.train(until_step=0)
    warm.train(until_step=0)
    fresh_params, warm_params = (
        {n: p.detach() for n, p in t.model.named_parameters() if p.requires_grad} for t in (fresh, warm)
    )
    understanding = sorted(n for n in warm_params if n.startswith(("vision_in.", "und_pos.")))
    kept = sorted(set(warm_params) - set(understanding))
    assert "vision_in.net.weight" in understanding and "und_pos.table" in understanding
    assert {"gen_in.net.0.weight", "gen_head.proj.weight", "gen_pos.table", "boi"} <= set(kept)
    assert any(n.startswith("llm.") for n in kept)
    for name in kept:
        source = "vision_in." + name.removeprefix("gen_in.") if name.startswith("gen_in.") else name
        assert torch.equal(warm_params[name], stage1_state[source]), name
    assert all(torch.equal(warm_params[n], fresh_params[n]) for n in understanding)
    assert not torch.equal(warm_params["boi"], fresh_params["boi"])
    assert torch.equal(warm.model.norm_out.mean, stage1_state["norm_out.mean"])
    assert torch.equal(warm.model.norm_in.mean, fresh.model.norm_in.mean)  # VQ statistics, fitted by this run
    Trainer(warm_cfg, progress=False).train()
    last = sorted((Path(warm_cfg.out) / "checkpoints").glob("step-*"))[-1]
    record = json.loads((last / "manifest.json").read_text())["init_from"]
    assert record["variant"] == "sem-sem" and record["fresh_understanding"] is True
    for variant, name, hint in (
        ("vq-vq", "other-output", "output space must match"),
        ("sem-sem", "shared-adapter", "shares one adapter"),
    ):
        cfg = tiny_train_config(variant, "lora", name=name, init_from=stage1.out, init_fresh_understanding=True, **kw)
        cfg.model.image_positions = "slot"
        with pytest.raises(UnilensError, match=hint):
            Trainer(cfg, progress=False).train()
        assert not Path(cfg.out).exists()
    with pytest.raises(UnilensError, match="set init_from too"):
        tiny_train_config("vq-sem", "lora", name="no-source", init_fresh_understanding=True)
    with pytest.raises(UnilensError, match="set one"):
        both = dict(init_fresh_understanding=True, init_fresh_generation=True)
        tiny_train_config("vq-sem", "lora", name="both", init_from=stage1.out, **both)


def test_init_from_refuses_another_model_before_writing_the_run_folder(tiny_train_config, tmp_path):
    stage1 = tiny_train_config("vq-vq", "lora", name="stage1", epochs=0.5, checkpoint_fractions=[1.0])
    Trainer(stage1, progress=False).train()
    cases = [
        (tiny_train_config("sem-sem", "lora", name="b1", init_from=stage1.out), "model.variant"),
        (tiny_train_config("vq-vq", "adapters", name="b2", init_from=stage1.out), "freeze.preset"),
        (tiny_train_config("vq-vq", "lora", name="b3", init_from=str(tmp_path / "nowhere")), "no such folder"),
    ]
    cases[1][0].model.image_positions = "slot"
    for cfg, problem in cases:
        with pytest.raises(UnilensError, match=problem):
            Trainer(cfg, progress=False).train()
        assert not Path(cfg.out).exists()
    # the same LLM weights with another tokenizer: refused too
    manifest_path = sorted((Path(stage1.out) / "checkpoints").glob("step-*"))[-1] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["dependencies"]["llm"]["tokenizer"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    cfg = tiny_train_config("vq-vq", "lora", name="b4", init_from=stage1.out)
    with pytest.raises(UnilensError, match="another tokenizer"):
        Trainer(cfg, progress=False).train()


def test_gen_region_weights_weigh_the_icon_tokens_of_prompts_that_name_the_weather(tiny_train_config):
    """With {weather: 5}, a generation record whose prompt names the weather weighs its icon's tokens 5 and the rest
    1; other generation records and dropped prompts weigh every token 1; the image loss is the weighted mean of the
    per-token losses, and all-one weights give exactly the unweighted loss."""
    import torch.nn.functional as F

    from models.unified import grid_side
    from tasks.render import region_slots
    from tasks.world import Watch

    cfg = tiny_train_config("vq-vq", "lora", name="region", gen_region_weights={"weather": 5.0})
    cfg.model.gen_prompt_dropout = 0.5
    trainer = Trainer(cfg, progress=False)
    side = grid_side(trainer.gen_space.num_tokens, "test")
    counts = {"named": 0, "unnamed": 0}
    for i, (record, seq) in enumerate(zip(trainer.records, trainer.sequences, strict=True)):
        if record["task"] != "generation":
            assert seq.gen_weights is None
            continue
        assert trainer.unconditional[i].gen_weights == [1.0] * side * side
        expected = [1.0] * side * side
        if "weather" in record["conversations"][0]["attributes"]:
            for slot in region_slots(Watch.from_dict(record["watch"]), "weather", side):
                expected[slot] = 5.0
        counts["named" if 5.0 in expected else "unnamed"] += 1
        assert seq.gen_weights == expected
    assert counts["named"] > 3 and counts["unnamed"] > 3

    model = trainer.model.eval()
    step = next(
        s for s in range(trainer.total_steps) if any(5.0 in (q.gen_weights or []) for q in trainer.step_sequences(s))
    )
    seqs = trainer.step_sequences(step)
    batch = collate(seqs, trainer.und_space, trainer.gen_space, trainer.encoder.pad_id)
    assert batch.gen_weights is not None and batch.gen_weights.shape == batch.gen_targets.shape
    assert (batch.gen_weights == 5.0).any()
    with torch.no_grad():
        h = model.hidden(batch)
        ce = F.cross_entropy(model.gen_head(h[batch.gen_predict_mask]).float(), batch.gen_targets, reduction="none")
        weighted = model(batch)["image_loss"].item()
        assert weighted == pytest.approx((ce * batch.gen_weights).sum().item() / batch.gen_weights.sum().item(), 1e-5)
        assert weighted != pytest.approx(ce.mean().item(), rel=1e-4)
        batch.gen_weights = torch.ones_like(batch.gen_weights)
        ones = model(batch)["image_loss"]
        assert batch.image_loss_count.item() == batch.gen_targets.numel()
        batch.gen_weights = None
        assert torch.allclose(ones, model(batch)["image_loss"], rtol=1e-6)
        assert batch.image_loss_count.item() == batch.gen_predict_mask.sum().item() == batch.gen_targets.numel()
    # training under the option runs, and a resume under another weighting is refused
    Trainer(cfg, progress=False).train(until_step=4)
    log = [json.loads(x) for x in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(math.isfinite(r["image_loss"]) and r["image_loss"] > 0 for r in log)
    for bad, match in (
        ({"hour": 2.0}, r"gen_region_weights names 'hour'.*\['battery', 'battery_pos', 'weather', 'weather_pos'\]"),
        ({"weather": 0.0}, r"gen_region_weights\[weather\] must be a positive number"),
        ({"weather": float("nan")}, "must be a positive number"),
        ({"battery": True}, "must be a positive number"),
    ):
        with pytest.raises(UnilensError, match=match):
            TrainConfig(gen_region_weights=bad)
    other = tiny_train_config("vq-vq", "lora", name="region", gen_region_weights={"weather": 2.0})
    with pytest.raises(UnilensError, match="gen_region_weights"):
        Trainer(other, progress=False).train()


def test_a_corner_region_weight_weighs_its_items_tokens_in_prompts_that_name_the_corner():
    """{weather_pos: 4, battery: 2}: a prompt naming the weather icon's corner (not its kind) weighs the icon's tokens
    4, one naming the battery level its bar's 2, one naming both weighs both; other tokens weigh 1."""
    from models.train import region_weights
    from tasks.render import region_slots
    from tasks.world import Watch

    corners = dict(weather_pos="top-left", battery_pos="top-right")
    watch = Watch(hour=3, minute=5, second=0, weather="sunny", battery=40, face_color=(20, 20, 20), **corners)
    prompt = {"attributes": ["time", "weather_pos"]}
    record = {"task": "generation", "watch": watch.to_dict(), "conversations": [prompt]}
    weights = {"weather_pos": 4.0, "battery": 2.0}
    icon = region_slots(watch, "weather", 8)
    assert region_weights(record, weights, 8) == [4.0 if i in icon else 1.0 for i in range(64)]
    record["conversations"][0]["attributes"] = ["weather", "battery"]
    bar = region_slots(watch, "battery", 8)
    assert region_weights(record, weights, 8) == [2.0 if i in bar else 1.0 for i in range(64)]
    record["conversations"][0]["attributes"] = ["weather_pos", "battery"]
    assert not set(icon) & set(bar)
    assert region_weights(record, weights, 8) == [4.0 if i in icon else 2.0 if i in bar else 1.0 for i in range(64)]
    record["task"] = "vqa"
    assert region_weights(record, weights, 8) is None


def test_answer_weights_weigh_the_labels_of_the_named_answers_and_the_text_loss_stays_a_weighted_mean(
    tiny_train_config,
):
    """With {time: 4} (and answers as the unit), every label that predicts a time answer's tokens weighs 4 times its
    answer-unit weight and every other label 1; the text loss is the weighted mean of the per-label losses, all-one
    weights give the unweighted loss, training runs, and bad names or weights are refused."""
    import torch.nn.functional as F

    from models.sequence import text_loss_weights
    from models.train import TrainConfig, answer_label_weights

    cfg = tiny_train_config("vq-vq", "lora", name="answers", answer_weights={"time": 4.0}, text_loss_unit="answer")
    trainer = Trainer(cfg, progress=False)
    seen = {"time": 0, "other": 0}
    for seq in trainer.sequences:
        attributes = [a for _, _, a in seq.answers]
        if "time" not in attributes:
            assert seq.label_weights is None
            continue
        expected = [1.0] * len(seq)
        for start, end, attribute in seq.answers:
            seen["time" if attribute == "time" else "other"] += 1
            # the labels that predict the answer's tokens (its end token included) sit one position before them
            answer_ids = seq.ids[start:end]
            assert seq.labels[start - 1 : end - 1] == answer_ids
            if attribute == "time":
                expected[start - 1 : end - 1] = [4.0] * (end - start)
        assert seq.label_weights == expected
    assert seen["time"] > 3 and seen["other"] > 3
    assert answer_label_weights(trainer.sequences[0], {}) is None

    step = next(s for s in range(trainer.total_steps) if any(q.label_weights for q in trainer.step_sequences(s)))
    batch = collate(trainer.step_sequences(step), trainer.und_space, trainer.gen_space, trainer.encoder.pad_id)
    assert batch.label_weights is not None and batch.label_weights.shape == batch.labels.shape
    assert (batch.label_weights == 4.0).sum() > 0 and (batch.label_weights[batch.labels == -100] == 1.0).all()
    model = trainer.model.eval()
    unit = text_loss_weights(batch.labels, "answer")
    with torch.no_grad():
        h = model.hidden(batch)
        mask = batch.labels != -100
        ce = F.cross_entropy(model.text_logits(h[mask]).float(), batch.labels[mask], reduction="none")
        weights = (unit * batch.label_weights)[mask]
        expected = (ce * weights).sum() / weights.sum()
        out = trainer.step_loss(step)
        assert out["text_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
        plain = (ce * unit[mask]).sum() / unit[mask].sum()
        assert out["text_loss"].item() != pytest.approx(plain.item(), rel=1e-4)
        # the same step without answer_weights (same seed: same weights and sequences) gives the plain loss
        off = tiny_train_config("vq-vq", "lora", name="answers-off", text_loss_unit="answer")
        unweighted = Trainer(off, progress=False)
        unweighted.model.eval()
        assert unweighted.step_loss(step)["text_loss"].item() == pytest.approx(plain.item(), rel=1e-5)
    Trainer(cfg, progress=False).train(until_step=3)
    log = [json.loads(x) for x in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(math.isfinite(r["text_loss"]) and r["text_loss"] > 0 for r in log)
    for bad, match in (
        ({"minute": 2.0}, r"answer_weights names 'minute'.*'caption'"),
        ({"time": 0.0}, r"answer_weights\[time\] must be a positive number"),
        ({"time": float("inf")}, "must be a positive number"),
    ):
        with pytest.raises(UnilensError, match=match):
            TrainConfig(answer_weights=bad)
    other = tiny_train_config("vq-vq", "lora", name="answers", answer_weights={"time": 2.0}, text_loss_unit="answer")
    with pytest.raises(UnilensError, match="answer_weights"):
        Trainer(other, progress=False).train()


def test_gen_region_weights_weigh_the_semantic_cosine_loss_too(tiny_train_config):
    import torch.nn.functional as F

    cfg = tiny_train_config("sem-sem", "lora", name="region-sem", gen_region_weights={"weather": 3.0})
    trainer = Trainer(cfg, progress=False)
    step = next(
        s for s in range(trainer.total_steps) if any(3.0 in (q.gen_weights or []) for q in trainer.step_sequences(s))
    )
    batch = collate(trainer.step_sequences(step), trainer.und_space, trainer.gen_space, trainer.encoder.pad_id)
    model = trainer.model.eval()
    with torch.no_grad():
        out = model.gen_head(model.hidden(batch)[batch.gen_predict_mask]).float()
        per_token = 1 - F.cosine_similarity(out, model.gen_target(batch.gen_targets.float()), dim=-1)
        expected = (per_token * batch.gen_weights).sum() / batch.gen_weights.sum()
        assert model(batch)["image_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
        assert expected.item() != pytest.approx(per_token.mean().item(), rel=1e-4)


def test_a_run_stopped_before_its_first_checkpoint_starts_its_log_over(tiny_train_config):
    cfg = tiny_train_config("sem-sem", "lora", epochs=0.35, checkpoint_fractions=[1.0], name="early-stop")
    Trainer(cfg, progress=False).train(until_step=3)
    assert not Trainer(cfg, progress=False).checkpoints()
    Trainer(cfg, progress=False).train()
    steps = [json.loads(line)["step"] for line in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))
