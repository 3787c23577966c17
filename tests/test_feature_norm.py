"""Whitened encoder spaces (ModelConfig.und_feature_norm / gen_feature_norm "whiten"): the norm whitens what it was
fitted on above its floor and inverts exactly; the semantic head's target scale counts the floor; a run trains,
saves, reloads and decodes with it; evaluation's cosine space does not depend on it; bad settings are named."""

import math

import pytest
import torch

from models.build import load_checkpoint
from models.generate import collate_prompts, generate_image_tokens, generation_prompt
from models.sequence import Encoder
from models.train import Trainer
from models.unified import AffineDistortion, FeatureNorm, ModelConfig, WhiteningNorm
from unilens.errors import UnilensError


def correlated(n: int = 4000, seed: int = 0) -> torch.Tensor:
    """Features with a large shared offset, strongly unequal principal variances (10^4 .. 10^-8; the floor at 1e-4
    of the largest is 1) and a random rotation."""
    spread = torch.tensor([100.0, 30.0, 10.0, 3.0, 0.1, 1e-4])  # standard deviations
    g = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(len(spread), len(spread), generator=g))
    return 50 + (torch.randn(n, len(spread), generator=g) * spread) @ rotation.T


def fitted() -> tuple[torch.Tensor, WhiteningNorm]:
    """The `correlated` features and a whitening fitted on them."""
    x = correlated()
    norm = WhiteningNorm(x.shape[1])
    norm.fit(x)
    return x, norm


def test_whitening_norm_whitens_above_its_floor_and_inverts():
    x, norm = fitted()
    z = norm(x)
    cov = torch.cov(z.T.double())
    # the four directions above the floor come out at unit variance, uncorrelated; the two under it keep their
    # share of the floor (0.01 and 1e-8) instead of being blown up to 1
    assert torch.allclose(cov, norm.covariance().double(), atol=2e-3)
    kept = norm.variance / norm.scale.pow(2)
    assert torch.allclose(kept[2:], torch.ones(4)) and kept[1] == pytest.approx(0.01, rel=0.1) and kept[0] < 1e-6
    assert z.mean(0).abs().max() < 1e-3
    assert torch.allclose(norm.inverse(z), x, atol=1e-3)
    # per-dimension standardisation would leave it far from white: that is what whitening is for
    plain = FeatureNorm(x.shape[1])
    plain.fit(x)
    off_diagonal = torch.cov(plain(x).T) - torch.diag(torch.diag(torch.cov(plain(x).T)))
    assert off_diagonal.abs().max() > 0.5
    # evaluation's cosine space is the per-dimension standardisation for both norms
    assert torch.allclose(norm.standardised(x), plain(x), atol=1e-5)


def test_target_norm_counts_the_floor(tiny_embedded):
    from conftest import tiny_built

    x, norm = fitted()
    for strength in (0.0, 0.5):
        distortion = AffineDistortion(x.shape[1], strength, seed=3)
        rms = distortion(norm(x)).pow(2).sum(-1).mean().sqrt().item()
        assert distortion.output_rms(norm.covariance()) == pytest.approx(rms, rel=0.02)
    # two of six directions sit under the floor: taking the output as white would overstate its norm
    plain = AffineDistortion(x.shape[1], 0.0, seed=3)
    assert plain.output_rms() == pytest.approx(math.sqrt(6))
    assert plain.output_rms(norm.covariance()) == pytest.approx(math.sqrt(4.01), rel=0.01)

    # the model's semantic head is rescaled to that norm of its own (whitened, distorted) targets
    built, dataset, _, gen = tiny_built(tiny_embedded, "sem-sem", gen_feature_norm="whiten", output_distortion=0.5)
    model = built.model
    sample = torch.stack([gen.targets(i) for i in dataset.images.ids()[:64]]).float()
    model.fit_feature_norms(sample, sample)
    assert isinstance(model.norm_out, WhiteningNorm)
    rms = model.gen_target(sample).pow(2).sum(-1).mean().sqrt().item()
    assert model.target_norm() == pytest.approx(rms, rel=0.02)


def test_a_whitened_run_trains_saves_reloads_and_decodes(tiny_train_config):
    cfg = tiny_train_config("sem-sem", "lora", epochs=0.35, checkpoint_fractions=[1.0], name="whiten")
    cfg.model.und_feature_norm = "whiten"
    cfg.model.gen_feature_norm = "whiten"
    trainer = Trainer(cfg, progress=False)
    summary = trainer.train()
    assert math.isfinite(summary["final_loss"])
    built, manifest = load_checkpoint(trainer.checkpoints()[-1])
    assert manifest["config"]["model"]["gen_feature_norm"] == "whiten"
    for side in ("norm_in", "norm_out"):
        saved, trained = getattr(built.model, side), getattr(trainer.model, side)
        assert isinstance(saved, WhiteningNorm)
        assert not torch.equal(saved.basis, torch.eye(len(saved.basis)))  # fitted, not the initial identity
        for name in ("mean", "std", "basis", "scale", "variance"):
            assert torch.equal(getattr(saved, name), getattr(trained, name).cpu())
    dataset, gen = trainer.dataset, trainer.gen_space
    enc = Encoder(built.tokenizer, trainer.und_space.num_tokens)
    prompts = [generation_prompt(enc, r) for r in dataset.test if r["task"] == "generation"][:3]
    batch = collate_prompts(prompts, trainer.und_space, gen, enc.pad_id)
    model = built.model.eval()
    cached = generate_image_tokens(model, batch, gen.num_tokens, gen, use_cache=True)
    fresh = generate_image_tokens(model, batch, gen.num_tokens, gen, use_cache=False)
    assert torch.allclose(cached, fresh, atol=1e-4)
    assert torch.isfinite(cached).all()


@pytest.mark.parametrize("field", ["und_feature_norm", "gen_feature_norm"])
def test_bad_settings_are_named(field):
    with pytest.raises(UnilensError, match=f"{field} must be one of"):
        ModelConfig(**{field: "pca"})


def test_whitening_runs_in_float32_for_bf16_inputs():
    x, norm = fitted()
    z = norm(x.bfloat16())
    assert z.dtype == torch.bfloat16
    # only the bf16 rounding of the input and output, not of a whitening done in bf16
    assert torch.allclose(z.float(), norm(x.bfloat16().float()), atol=0.05, rtol=0.01)
    assert norm.inverse(z).dtype == torch.bfloat16
