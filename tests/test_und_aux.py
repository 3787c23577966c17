"""Auxiliary attribute losses at the understanding image (ModelConfig.und_aux_loss): the heads change nothing the LLM
sees, start at a uniform guess, train the adapters toward the attribute, are logged, saved and reloaded, are dropped
or added freely across a warm start, and bad settings are named."""

import json
import math

import numpy as np
import pytest
import torch

from models.build import load_checkpoint
from models.reader import HEADS, labels_of
from models.sequence import Encoder, collate
from models.train import Trainer
from models.unified import ModelConfig
from tasks.records import load_dataset
from tasks.world import Watch
from unilens.errors import UnilensError


def tiny_batch(tiny_embedded, aux: dict, rank: int = 0):
    from conftest import tiny_built

    built, dataset, und, gen = tiny_built(tiny_embedded, und_slot_rank=rank, und_aux_loss=aux)
    enc = Encoder(built.tokenizer, und.num_tokens)
    records = [r for r in dataset.train if r["task"] == "vqa"][:3] + [
        r for r in dataset.train if r["task"] == "generation"
    ][:1]
    seqs = [enc.record(r) for r in records]
    for seq, r in zip(seqs[:3], records[:3], strict=True):
        labels = labels_of(Watch.from_dict(r["watch"]))
        seq.und_labels = [labels[a] for a in HEADS]
    return built.model, collate(seqs, und, gen, enc.pad_id), records, und


def test_the_heads_start_at_a_uniform_guess_and_change_nothing_else(tiny_embedded):
    plain, batch, _, _ = tiny_batch(tiny_embedded, {})
    aux, batch_aux, records, _ = tiny_batch(tiny_embedded, {"hour": 2.0, "weather": 1.0})
    with torch.no_grad():
        out_plain, out_aux = plain(batch), aux(batch_aux)
    # same seed; the heads are built without drawing from the global generator, so every other weight is equal
    assert torch.equal(out_plain["text_loss"], out_aux["text_loss"])
    assert torch.equal(out_plain["image_loss"], out_aux["image_loss"])
    # three labelled images (the generation row has none); zero heads give each class the same probability
    expected = 2.0 * math.log(HEADS["hour"]) + 1.0 * math.log(HEADS["weather"])
    assert out_aux["aux_loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out_aux["loss"].item() == pytest.approx(out_plain["loss"].item() + expected, rel=1e-5)
    assert batch_aux.und_label_count.item() == 3
    hours = [labels_of(Watch.from_dict(r["watch"]))["hour"] for r in records[:3]]
    assert batch_aux.und_labels[:3, list(HEADS).index("hour")].tolist() == hours
    assert batch_aux.und_labels[3].tolist() == [-100] * len(HEADS)


def test_the_gradient_trains_the_per_slot_map_to_carry_the_attribute(tiny_embedded):
    """The aux loss alone (no LLM in the loop) on the tiny dataset's images: the map and head fit the hour of the
    training images far above the majority class."""
    model, _, _, und = tiny_batch(tiny_embedded, {"hour": 1.0}, rank=8)
    dataset = load_dataset(tiny_embedded / "data")
    records = [r for r in dataset.train if r["task"] == "vqa"]
    images = sorted({r["image"]: r for r in records}.items())[:48]
    raw = torch.cat([und.inputs(name) for name, _ in images])
    model.fit_feature_norms(raw, raw)
    hours = torch.tensor([labels_of(Watch.from_dict(r["watch"]))["hour"] for _, r in images])
    labels = torch.full((len(images), len(HEADS)), -100, dtype=torch.long)
    labels[:, list(HEADS).index("hour")] = hours
    params = list(model.und_slot.parameters()) + list(model.und_aux.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(150):
        tokens = model.with_slots(model.und_embed(raw), "und")
        pooled = model.first_norm(tokens).view(len(images), -1, model.d_model).mean(1)
        loss, correct = model.und_aux.loss_sum(pooled, labels)
        opt.zero_grad()
        (loss / len(images)).backward()
        opt.step()
    accuracy = correct["hour"].item() / len(images)
    majority = np.bincount(hours.numpy()).max() / len(images)
    assert accuracy > majority + 0.3, (accuracy, majority)


def test_a_run_logs_saves_reloads_and_warm_starts_across_the_heads(tiny_train_config):
    cfg = tiny_train_config("sem-sem", "lora", epochs=0.35, checkpoint_fractions=[1.0], name="und-aux")
    cfg.model.und_slot_rank = 2
    cfg.model.und_aux_loss = {"hour": 1.0}
    trainer = Trainer(cfg, progress=False)
    summary = trainer.train()
    rows = [json.loads(line) for line in (trainer.out / "log.jsonl").read_text().splitlines()]
    assert all("aux_loss" in r and 0 <= r["aux_accuracy_hour"] <= 1 for r in rows)
    assert rows[0]["aux_loss"] == pytest.approx(math.log(12), rel=1e-4)
    assert "final_aux_loss" in summary
    heads = trainer.model.und_aux.heads["hour"].detach()
    assert heads.abs().max() > 0
    built, manifest = load_checkpoint(trainer.checkpoints()[-1])
    assert manifest["config"]["model"]["und_aux_loss"] == {"hour": 1.0}
    assert torch.equal(built.model.und_aux.heads["hour"], heads)

    # a next stage without the heads starts from this one (the heads stay behind) ...
    plain = tiny_train_config("sem-sem", "lora", epochs=0.1, checkpoint_fractions=[1.0], name="after-aux")
    plain.model.und_slot_rank = 2
    plain.init_from = str(trainer.out)
    after = Trainer(plain, progress=False)
    after.train(until_step=0)
    assert not hasattr(after.model, "und_aux")
    assert torch.equal(after.model.und_slot.up.detach(), trainer.model.und_slot.up.detach())
    # ... and one that adds them starts them fresh, at zero
    again = tiny_train_config("sem-sem", "lora", epochs=0.1, checkpoint_fractions=[1.0], name="aux-again")
    again.model.und_slot_rank = 2
    again.model.und_aux_loss = {"weather": 0.5}
    again.init_from = str(trainer.out)
    more = Trainer(again, progress=False)
    more.train(until_step=0)
    assert more.model.und_aux.heads["weather"].abs().max() == 0


@pytest.mark.parametrize(
    ("aux", "message"),
    [
        ({"colour": 1.0}, "no head reads"),
        ({"hour": 0.0}, "positive number"),
        ({"hour": True}, "positive number"),
        ({"hour": float("nan")}, "positive number"),
        (["hour"], "must map attributes"),
    ],
)
def test_bad_settings_are_named(aux, message):
    with pytest.raises(UnilensError, match=message):
        ModelConfig(und_aux_loss=aux)
