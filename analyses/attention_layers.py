"""`unilens attend MODEL...`: per block and head, how much the answer's position attends to a drawn item's tokens.

Tidy CSVs (per record x block x head, and summarised with CIs over images) and one figure, for several models. With
`ablate=K`, a causal check of what the pattern suggests: the K heads that put the most attention on the item are
zeroed where the answer is read out, each alone and all together, against the K heads that put the least on it, and
the answer is scored among the question's values (`ablation.csv`; `scoring` as `probes.attention.ablate_heads`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analyses.plots import plot_answer_attention
from models.build import build_spaces, load_checkpoint
from models.evaluate import last_checkpoints
from models.sequence import Encoder
from probes.attention import ablate_heads, answer_attention, summarize_ablation, summarize_attention
from tasks.records import load_dataset
from unilens.errors import UnilensError
from unilens.io import atomic_write_text


def run_attention(
    models: dict[str, str],
    out: str | Path,
    question: str = "weather",
    region: str = "weather_region",
    split: str = "test",
    limit: int = 0,
    batch_size: int = 16,
    log=print,
    ablate: int = 0,
    scoring: str = "auto",
) -> dict[str, pd.DataFrame]:
    """{"attention": per model x block x head with CIs, "ablation": per model x condition (empty without `ablate`)},
    both also written to `out` beside the per-record rows and the figure."""
    if split not in ("test", "train"):
        raise UnilensError(f"split '{split}': use 'test' or 'train'")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables, ablations = [], []
    for name, ckpt in last_checkpoints(models).items():
        built, manifest = load_checkpoint(ckpt)
        dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
        und, gen = build_spaces(built, built.model.cfg, dataset, manifest["config"]["cache_dir"])
        records = [r for r in getattr(dataset, split) if r["task"] == "vqa"]
        try:
            encoder = Encoder(built.tokenizer, und.num_tokens)
            rows = answer_attention(built.model.eval(), records, und, gen, encoder, question, region, batch_size, limit)
        except ValueError as err:
            raise UnilensError(f"{name}: {err}") from err
        log(f"[attend] {name}: {rows['record'].nunique()} questions about '{question}'")
        tables.append(rows.assign(model=name, checkpoint=str(ckpt)))
        if ablate:
            conditions = _ablation_conditions(rows, ablate)
            try:
                done = ablate_heads(
                    built.model, records, und, gen, encoder, question, conditions, batch_size, limit, scoring
                )
            except ValueError as err:
                raise UnilensError(f"{name}: {err}") from err
            ablations.append(done.assign(model=name, checkpoint=str(ckpt)))
    rows = pd.concat(tables, ignore_index=True)
    summary = summarize_attention(rows)
    atomic_write_text(out / "attention_rows.csv", rows.to_csv(index=False))
    atomic_write_text(out / "attention.csv", summary.to_csv(index=False))
    plot_answer_attention(summary, out / f"attention_{question}_{region}.png")
    ablation = pd.DataFrame()
    if ablations:
        done = pd.concat(ablations, ignore_index=True)
        ablation = summarize_ablation(done)
        atomic_write_text(out / "ablation_rows.csv", done.to_csv(index=False))
        atomic_write_text(out / "ablation.csv", ablation.to_csv(index=False))
    return {"attention": summary, "ablation": ablation}


def _ablation_conditions(rows: pd.DataFrame, k: int) -> dict[str, list[tuple[int, int]]]:
    """The k heads with the most attention mass on the item (the mean over images, as `summarize_attention`'s
    `to_region`), each alone and together, and the k with the least (a control: zeroing as many heads that do not
    look at the item)."""
    per_image = rows.groupby(["layer", "head", "image"])["to_region"].mean()
    ranked = per_image.groupby(level=["layer", "head"]).mean().sort_values(ascending=False)
    heads = [(int(layer), int(head)) for layer, head in ranked.index]
    top, bottom = heads[:k], heads[-k:]
    return {
        **{f"head {layer}.{head}": [(layer, head)] for layer, head in top},
        f"top {k} together": top,
        f"bottom {k} together (control)": bottom,
    }
