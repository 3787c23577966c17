"""Image tokens at a fixed norm (ModelConfig.image_token_norm): every image token the LLM reads, on both sides and
in cached decoding, has the set multiple of the text embeddings' mean norm and keeps its direction; a run trains,
saves and reloads with it; bad settings are named."""

import math

import pytest
import torch

from models.build import load_checkpoint
from models.generate import collate_prompts, generate_image_tokens, generation_prompt
from models.sequence import GEN_IMAGE, TEXT, UND_IMAGE, Encoder, collate
from models.train import Trainer
from models.unified import ModelConfig
from unilens.errors import UnilensError


def embedded_tokens(tiny_embedded, scale: float):
    from conftest import tiny_built

    built, dataset, und, gen = tiny_built(tiny_embedded, "sem-vq", image_positions="slot", image_token_norm=scale)
    enc = Encoder(built.tokenizer, und.num_tokens)
    records = [next(r for r in dataset.train if r["task"] == t) for t in ("vqa", "generation")]
    batch = collate([enc.record(r) for r in records], und, gen, enc.pad_id)
    with torch.no_grad():
        return built, batch, built.model.embed(batch), (dataset, und, gen, enc)


def test_image_tokens_have_the_set_norm_and_keep_their_direction(tiny_embedded):
    _, batch, plain, _ = embedded_tokens(tiny_embedded, 0.0)
    built, _, scaled, (dataset, und, gen, enc) = embedded_tokens(tiny_embedded, 3.0)
    table = built.model.base_llm.get_input_embeddings().weight
    unit = table.norm(dim=-1).mean()
    assert built.model.text_token_norm == pytest.approx(unit.item())
    for kind in (UND_IMAGE, GEN_IMAGE):
        at = batch.kind == kind
        assert at.sum() > 0
        norms = scaled[at].norm(dim=-1)
        assert torch.allclose(norms, torch.full_like(norms, 3.0 * unit.item()), rtol=1e-5)
        # off, the adapters' own scale (a fresh adapter starts near the text embeddings' size, not at 3x)
        assert not torch.allclose(plain[at].norm(dim=-1), norms, rtol=0.05)
        direction = plain[at] / plain[at].norm(dim=-1, keepdim=True)
        assert torch.allclose(scaled[at] / norms[:, None], direction, atol=1e-5)
    text = batch.kind == TEXT
    assert torch.equal(scaled[text], plain[text])

    # cached decoding feeds each generated token back at the same norm as recomputing the whole prefix does
    prompts = [generation_prompt(enc, r) for r in dataset.test if r["task"] == "generation"][:3]
    prompt_batch = collate_prompts(prompts, und, gen, enc.pad_id)
    model = built.model.eval()
    cached = generate_image_tokens(model, prompt_batch, gen.num_tokens, gen, use_cache=True)
    fresh = generate_image_tokens(model, prompt_batch, gen.num_tokens, gen, use_cache=False)
    assert torch.equal(cached, fresh)


def test_a_run_trains_saves_and_reloads_with_it(tiny_train_config):
    cfg = tiny_train_config("sem-sem", "lora", epochs=0.35, checkpoint_fractions=[1.0], name="token-norm")
    cfg.model.image_positions = "slot"
    cfg.model.image_token_norm = 2.0
    trainer = Trainer(cfg, progress=False)
    summary = trainer.train()
    assert math.isfinite(summary["final_loss"])
    built, manifest = load_checkpoint(trainer.checkpoints()[-1])
    assert manifest["config"]["model"]["image_token_norm"] == 2.0
    x = torch.randn(built.model.und_tokens, built.model.d_model) * 50
    with torch.no_grad():
        norms = built.model.with_slots(x, "und").norm(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, 2.0 * built.model.text_token_norm.item()), rtol=1e-5)


@pytest.mark.parametrize("scale", [-1.0, float("nan"), float("inf"), True, "big"])
def test_bad_settings_are_named(scale):
    with pytest.raises(UnilensError, match="image_token_norm"):
        ModelConfig(image_token_norm=scale)
