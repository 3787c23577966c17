"""The semantic head's output norm under teacher forcing against the targets' norm, and what free generation gives
(after the decoding rescale): why models.generate rescales each semantic output to the targets' norm.

    python docs/results/2026-12-01/dense/head_norm.py CHECKPOINT
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "2026-11-22" / "recipe_search"))
from _common import load

from models.generate import collate_prompts, generate_image_tokens, generation_prompt
from models.sequence import Encoder, collate

built, dataset, und, gen, _ = load(sys.argv[1])
model = built.model.eval()
records = [r for r in dataset.test if r["task"] == "generation"][:32]
enc = Encoder(built.tokenizer, gen.num_tokens)
with torch.no_grad():
    batch = collate([enc.record(r) for r in records], und, gen, enc.pad_id)
    head = model.gen_head(model.hidden(batch)[batch.gen_predict_mask]).float()
    target = model.gen_target(batch.gen_targets.float())
    cos = torch.nn.functional.cosine_similarity(head, target, -1).mean()
    norms = f"head norm {head.norm(dim=-1).mean():.2f}, target norm {target.norm(dim=-1).mean():.2f}"
    print(f"teacher forced: {norms}, cos {cos:.3f}")
    prompts = collate_prompts([generation_prompt(enc, r) for r in records], und, gen, enc.pad_id)
    made = model.norm_out(generate_image_tokens(model, prompts, gen.num_tokens, gen))
    truth = model.norm_out(torch.stack([gen.targets(r["image"]) for r in records]))
    print(
        f"free generation (standardised): norm {made.norm(dim=-1).mean():.2f} (truth {truth.norm(dim=-1).mean():.2f}), "
        f"cos to truth {torch.nn.functional.cosine_similarity(made, truth, -1).mean():.3f}, "
        f"std across prompts {made.std(0).mean():.3f} (truth {truth.std(0).mean():.3f})"
    )
