"""How large are the image tokens the LLM reads, against its text embeddings? Per checkpoint: the root-mean-square
norm per token of the text embedding table, of the understanding image's tokens (adapter, per-slot map and slot
vectors) and of the generated image's input tokens (generation adapter and slot vectors), over test images.

    python docs/results/2026-12-05/scale/token_scale.py DATASET OUT.csv CHECKPOINT...
"""

import sys

import pandas as pd
import torch

from models.build import build_spaces, load_checkpoint
from tasks.records import load_dataset


def rms(x: torch.Tensor) -> float:
    return float(x.pow(2).sum(-1).mean().sqrt())


if __name__ == "__main__":
    dataset_dir, out, *checkpoints = sys.argv[1:]
    torch.set_num_threads(1)
    dataset = load_dataset(dataset_dir)
    images = sorted({r["image"] for r in dataset.test if r.get("image")})[:32]
    rows = []
    for checkpoint in checkpoints:
        built, manifest = load_checkpoint(checkpoint)
        model = built.model.eval()
        und, gen = build_spaces(built, model.cfg, dataset, "runs/cache")
        with torch.no_grad():
            text = rms(model.base_llm.get_input_embeddings().weight)
            und_tokens = torch.cat([model.with_slots(model.und_embed(und.inputs(i)), "und") for i in images])
            gen_tokens = torch.cat([model.with_slots(model.gen_embed(gen.inputs(i)), "gen") for i in images])
        rows.append(
            {
                "checkpoint": checkpoint,
                "variant": model.cfg.variant,
                "step": manifest["step"],
                "text_embedding_norm": text,
                "und_image_token_norm": rms(und_tokens),
                "gen_image_token_norm": rms(gen_tokens),
            }
        )
        print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(out, index=False)
