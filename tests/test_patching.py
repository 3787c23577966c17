"""Activation patching: exactness at the extremes, and batching that changes nothing."""

import copy

import pytest
import torch

from models.generate import question_prompts
from models.sequence import Encoder, collate
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
