"""The per-slot low-rank map on the understanding input (ModelConfig.und_slot_rank): starts as a no-op, reads where
a token sits (the shared adapter alone cannot, once tokens are averaged), trains, saves, reloads, rejects bad ranks."""

import pytest
import torch

from models.build import load_checkpoint
from models.checkpoint import read_manifest
from models.presets import parameter_table
from models.sequence import Encoder, collate
from models.train import Trainer
from models.unified import ModelConfig
from unilens.errors import UnilensError


def tiny_model(tiny_embedded, rank: int):
    from conftest import tiny_built

    return tiny_built(tiny_embedded, und_slot_rank=rank)


def test_the_map_starts_as_a_no_op_and_then_reads_where_tokens_sit(tiny_embedded):
    plain, dataset, und, gen = tiny_model(tiny_embedded, 0)
    slotted, *_ = tiny_model(tiny_embedded, 4)
    enc = Encoder(plain.tokenizer, und.num_tokens)
    records = [r for r in dataset.train if r["task"] == "vqa"][:2]
    batch = collate([enc.record(r) for r in records], und, gen, enc.pad_id)
    with torch.no_grad():  # same seed, and the map draws from its own generator: only the map differs
        assert torch.equal(plain.model.embed(batch), slotted.model.embed(batch))
        slotted.model.und_slot.up.normal_(generator=torch.Generator().manual_seed(1))
        raw = und.inputs(records[0]["image"])
        shuffled = raw[torch.randperm(len(raw), generator=torch.Generator().manual_seed(2))]
        # the shared adapter maps each token alone: the image's average is blind to where each token sits
        assert torch.allclose(plain.model.und_embed(raw).mean(0), plain.model.und_embed(shuffled).mean(0), atol=1e-5)
        # with a map per slot, the same tokens in other slots average to something else
        gap = (slotted.model.und_embed(raw).mean(0) - slotted.model.und_embed(shuffled).mean(0)).norm()
        assert gap > 0.1 * slotted.model.und_embed(raw).mean(0).norm()
        with pytest.raises(UnilensError, match="whole images"):
            slotted.model.und_embed(raw[:-1])


def test_the_map_trains_saves_and_reloads(tiny_train_config):
    cfg = tiny_train_config("sem-sem", "lora", epochs=0.35, checkpoint_fractions=[1.0], name="und-slot")
    cfg.model.und_slot_rank = 3
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    model = trainer.model
    table = parameter_table(model).set_index("component")
    tokens, rank, d_in = model.und_slot.down.shape
    assert rank == 3 and tokens == model.und_tokens
    assert table.loc["und_slot", "trainable"] == tokens * rank * d_in + model.d_model * rank
    assert model.und_slot.up.detach().abs().max() > 0  # trained away from its zero start
    built, manifest = load_checkpoint(trainer.checkpoints()[-1])
    assert manifest["config"]["model"]["und_slot_rank"] == 3
    assert torch.equal(built.model.und_slot.up, model.und_slot.up.detach())
    assert torch.equal(built.model.und_slot.down, model.und_slot.down.detach())


@pytest.mark.parametrize("rank", [-1, 2.5, True])
def test_bad_ranks_are_named(rank):
    with pytest.raises(UnilensError, match="und_slot_rank must be a whole number"):
        ModelConfig(und_slot_rank=rank)


def test_a_stage_may_add_a_map_to_a_run_without_one_but_not_change_a_trained_one(tiny_train_config):
    first = tiny_train_config("sem-sem", "lora", epochs=0.2, checkpoint_fractions=[1.0], name="no-map")
    before = Trainer(first, progress=False)
    before.train()
    records = [r for r in before.dataset.train if r["task"] == "vqa"][:2]
    enc = before.encoder
    batch = collate([enc.record(r) for r in records], before.und_space, before.gen_space, enc.pad_id)

    added = tiny_train_config("sem-sem", "lora", epochs=0.1, checkpoint_fractions=[1.0], name="map-added")
    added.model.und_slot_rank = 2
    added.init_from = str(before.out)
    after = Trainer(added, progress=False)
    after.train(until_step=0)
    assert after.model.und_slot.up.detach().abs().max() == 0
    with torch.no_grad():  # the added map is a no-op: the warm-started model embeds as the checkpoint's did
        assert torch.allclose(after.model.embed(batch), before.model.embed(batch))

    after.train()  # the map trains in the new stage; a later stage may not change its rank
    assert read_manifest(after.checkpoints()[-1])["init_from"]["added_slot_map"] is True
    assert after.model.und_slot.up.detach().abs().max() > 0
    changed = tiny_train_config("sem-sem", "lora", epochs=0.1, checkpoint_fractions=[1.0], name="map-changed")
    changed.model.und_slot_rank = 3
    changed.init_from = str(after.out)
    with pytest.raises(UnilensError, match="und_slot_rank"):
        Trainer(changed, progress=False).train(until_step=0)
