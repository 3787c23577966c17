"""Slot embeddings (ModelConfig.image_positions): added where training adds them, where decoding adds them, trained,
saved and reloaded."""

import pytest
import torch

from models.build import build_model, build_spaces, load_checkpoint
from models.generate import collate_prompts, generate_image_tokens, generation_prompt
from models.presets import FreezeConfig, parameter_table
from models.sequence import Encoder, collate
from models.train import Trainer
from models.unified import ModelConfig
from tasks.records import load_dataset
from unilens.errors import UnilensError


def tiny_model(tiny_embedded, variant: str, image_positions: bool, preset: str = "adapters"):
    cfg = ModelConfig(
        variant=variant,
        llm=str(tiny_embedded / "lm"),
        semantic_encoder=str(tiny_embedded / "semantic"),
        vq_encoder=str(tiny_embedded / "vq"),
        image_positions=image_positions,
    )
    built = build_model(cfg, FreezeConfig(preset), seed=0)
    dataset = load_dataset(tiny_embedded / "data")
    und, gen = build_spaces(built, cfg, dataset, tiny_embedded.parent / "cache")
    return built, dataset, und, gen


@pytest.mark.parametrize("image_positions", [False, True])
def test_greedy_generation_is_what_teacher_forcing_predicts(tiny_embedded, image_positions):
    """Feed the generated codes back as a teacher-forced target: the head must predict each of them again. This
    fails if decoding and training disagree on any slot's input, the slot embedding included."""
    built, dataset, und, gen = tiny_model(tiny_embedded, "vq-vq", image_positions)
    model = built.model.eval()
    if image_positions:  # large enough that leaving them out anywhere changes the argmax
        with torch.no_grad():
            model.gen_pos.table.copy_(
                torch.randn(model.gen_pos.table.shape, generator=torch.Generator().manual_seed(0))
            )
    enc = Encoder(built.tokenizer, und.num_tokens)
    record = next(r for r in dataset.test if r["task"] == "generation")
    codes = generate_image_tokens(
        model, collate_prompts([generation_prompt(enc, record)], und, gen, enc.pad_id), gen.num_tokens, gen
    )[0]
    batch = collate([enc.record(record)], und, gen, enc.pad_id)
    batch.gen_inputs = gen.codebook[codes]
    with torch.no_grad():
        again = model.gen_head(model.hidden(batch)[batch.gen_predict_mask]).argmax(-1)
    assert torch.equal(again, codes)
    if image_positions:  # the check has teeth: without the slot embeddings the same codes are not predicted
        with torch.no_grad():
            model.gen_pos.table.zero_()
            other = model.gen_head(model.hidden(batch)[batch.gen_predict_mask]).argmax(-1)
        assert not torch.equal(other, codes)


def test_slot_embeddings_add_one_vector_per_slot(tiny_embedded):
    built, dataset, und, gen = tiny_model(tiny_embedded, "sem-sem", image_positions=True)
    model = built.model
    enc = Encoder(built.tokenizer, und.num_tokens)
    records = [r for r in dataset.train if r["task"] == "vqa"][:3]
    batch = collate([enc.record(r) for r in records], und, gen, enc.pad_id)
    with torch.no_grad():
        added = model.embed(batch)[batch.kind == 1] - model.und_embed(batch.und_inputs)
    expected = model.und_pos().detach().repeat(len(records), 1)
    assert torch.allclose(added, expected, atol=1e-6)


@pytest.mark.parametrize("kind", [True, "grid"])
def test_slot_embeddings_train_save_and_reload(tiny_train_config, kind):
    cfg = tiny_train_config("vq-sem", "lora", epochs=0.35, checkpoint_fractions=[1.0], name=f"slots-{kind}")
    cfg.model.image_positions = kind
    trainer = Trainer(cfg, progress=False)
    start = trainer.model.und_pos().detach().clone()
    trainer.train()
    model = trainer.model
    table = parameter_table(model).set_index("component")
    expected = sum(p.numel() for p in [*model.und_pos.parameters(), *model.gen_pos.parameters()])
    tokens = model.und_pos().shape[0] + model.gen_pos().shape[0]
    assert table.loc["image_positions", "trainable"] == expected
    side = round(model.und_pos().shape[0] ** 0.5)  # the tiny encoders' token grids are square, as the real ones
    assert expected == (tokens * model.d_model if kind is True else 2 * (side + side) * model.d_model)
    assert not torch.equal(model.und_pos().detach(), start)
    built, manifest = load_checkpoint(trainer.checkpoints()[-1])
    assert manifest["config"]["model"]["image_positions"] == kind
    assert torch.equal(built.model.und_pos(), model.und_pos().detach())
    assert torch.equal(built.model.gen_pos(), model.gen_pos().detach())


def test_grid_positions_are_a_row_plus_a_column_and_bad_kinds_are_named(tiny_embedded):
    built, *_ = tiny_model(tiny_embedded, "sem-sem", image_positions="grid")
    table = built.model.und_pos().detach()
    side = round(table.shape[0] ** 0.5)
    grid = table.view(side, side, -1)
    # moving one column right adds the same vector in every row
    assert torch.allclose(grid[:, 1] - grid[:, 0], (grid[0, 1] - grid[0, 0]).expand(side, -1), atol=1e-6)
    with pytest.raises(UnilensError, match="image_positions must be"):
        tiny_model(tiny_embedded, "sem-sem", image_positions="diagonal")


def test_a_run_written_before_the_field_existed_still_resumes(tiny_train_config):
    import yaml

    cfg = tiny_train_config("vq-vq", "adapters", epochs=0.35, checkpoint_fractions=[1.0])
    Trainer(cfg, progress=False).train()
    path = cfg.out + "/config.yaml"
    old = yaml.safe_load(open(path))
    del old["model"]["image_positions"]
    open(path, "w").write(yaml.safe_dump(old, sort_keys=False))
    Trainer(cfg, progress=False).train()  # reads the missing field as its default instead of refusing the folder
    cfg.model.image_positions = True
    with pytest.raises(UnilensError, match=r"holds a different run.*image_positions"):
        Trainer(cfg, progress=False).train()


def test_transposed_order_feeds_each_image_column_by_column(tiny_embedded):
    built, dataset, und, _gen = tiny_model(tiny_embedded, "sem-sem", image_positions=False)
    model = built.model
    raw = torch.cat([und.inputs(r["image"]) for r in dataset.train[:2]])
    side = round(und.num_tokens**0.5)
    with torch.no_grad():
        raster = model.und_embed(raw).view(2, side, side, -1)
        model.cfg.image_order = "transposed"
        transposed = model.und_embed(raw).view(2, side, side, -1)
        assert torch.allclose(transposed, raster.transpose(1, 2), atol=1e-6)  # slot (c, r) holds patch (r, c)
        model.cfg.image_order = "spiral"
        with pytest.raises(UnilensError, match="raster or transposed"):
            model.und_embed(raw)
