"""`unilens report FOLDER... --out report.html`: one self-contained HTML page over result folders.

Each folder is recognised by what the CLI wrote into it: a run's `eval/summary.csv` (evaluation), `probes.csv`
(layer-wise probes), `patching_summary.csv` (patching), `transfer.csv` (knowledge transfer), `encoder_probes.csv`
(what the input spaces carry). Every section has the question it answers, a one-line answer computed from the
numbers, its table and its figures (embedded).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from analyses.plots import by_layer, fold_count, score_bounds
from analyses.transfer import answer_lines
from unilens.errors import UnilensError
from unilens.io import atomic_write_text


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}"><figcaption>{html.escape(path.name)}</figcaption></figure>'


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, classes="t")


def _section(title: str, answers: list[str], table: pd.DataFrame, figures: list[Path], source: Path) -> str:
    items = "".join(f"<li>{html.escape(a)}</li>" for a in answers)
    figs = "".join(_img(f) for f in figures)
    return (
        f"<section><h2>{html.escape(title)}</h2><p class=src>{html.escape(str(source))}</p>"
        f"<ul class=answer>{items}</ul>{figs}<details><summary>table</summary>{_table(table)}</details></section>"
    )


def eval_section(run: Path) -> str:
    s = pd.read_csv(run / "eval" / "summary.csv")
    s = s[s["step"] == s["step"].max()] if "step" in s else s
    keep = s[(s["value"] == "all") & s["task"].isin(["vqa", "vqa_choice", "generation"])]
    answers = []
    for r in keep[keep["metric"].isin(["exact", "choice", "correct", "ceiling"])].itertuples():
        answers.append(f"{r.task} {r.attribute} {r.metric}: {r.mean:.3f} [{r.lo:.3f}, {r.hi:.3f}] (n={r.n})")
    rel = s[s["task"].str.startswith("teacher_forced") & (s["metric"] == "answer_nll")]
    if len(rel):
        piv = rel.pivot_table(index="attribute", columns="task", values="mean")
        for attr, r in piv.iterrows():
            gap = r.get("teacher_forced_swapped_image", float("nan")) - r.get("teacher_forced_true_image", float("nan"))
            answers.append(f"{attr}: answer loss rises by {gap:.3f} nats when the image is swapped")
    figs = sorted((run / "eval").glob("grid_*.png"))[-1:]
    cell = run / "cell.json"  # battery cells are named in their cell.json; their folders are hashes
    name = json.loads(cell.read_text())["name"] if cell.is_file() else run.name
    return _section(f"How well does {name} understand and generate?", answers, keep, figs, run)


def probe_section(folder: Path) -> str:
    p = pd.read_csv(folder / "probes.csv")
    if "group" not in p:  # tables written before position groups had the image tokens only
        p = p.assign(group="image")
    answers = []
    for (model, context, group, attribute), g in p.groupby(["model", "context", "group", "attribute"]):
        per_layer = by_layer(g, "score", [], n_folds=fold_count(g), bounds=score_bounds(g)).set_index("layer")
        best = int(per_layer["mean"].idxmax())
        mean, lo, hi = per_layer.loc[best, ["mean", "lo", "hi"]]
        first = g[g["layer"] == -1]["score"]  # no adapter site at a text position (prompt_end)
        where = "adapter" if best == -1 else f"layer {best}"
        answers.append(
            f"{model}, {context} ({group}): {attribute} best decoded at {where}: {mean:.3f} [{lo:.3f}, {hi:.3f}] "
            f"({f'adapter output {first.mean():.3f}, ' if len(first) else ''}chance {g['chance'].mean():.3f})"
            if "chance" in g
            else f"{model}, {context} ({group}): {attribute} best R2 at {where}: {mean:.3f} [{lo:.3f}, {hi:.3f}]"
        )
    cross_path = folder / "cross_context.csv"
    if cross_path.is_file():
        c = pd.read_csv(cross_path)
        for (model, attribute, tr), g in c.groupby(["model", "attribute", "train_context"]):
            by = g.groupby("layer")["score"].mean()
            answers.append(
                f"{model}: {attribute} probe fit in {tr} context, tested in the other: best {by.max():.3f} at "
                f"{'adapter' if by.idxmax() == -1 else 'layer ' + str(int(by.idxmax()))}"
            )
    table = (
        p.groupby(["model", "context", "group", "attribute", "layer"])["score"].mean().unstack("layer").reset_index()
    )
    return _section(
        "Where is each attribute linearly decodable, and do the two contexts share it?",
        answers,
        table,
        sorted(folder.glob("*.png")),
        folder,
    )


def patching_section(folder: Path) -> str:
    s = pd.read_csv(folder / "patching_summary.csv")
    answers = []
    d = s[(s["mode"] == "denoise") & s["site_kind"].isin(["resid_post", "adapter"])]
    for (model, attribute), g in d.groupby(["model", "attribute"]):
        if not g["separates"].all():
            answers.append(f"{model}, {attribute}: clean and corrupt answers do not differ; effects are noise")
            continue
        img = g[g["group"] == "image"].set_index("layer")["effect"]
        text = g[g["group"] != "image"].groupby("layer")["effect"].max()
        moved = [int(layer) for layer in text.index if text[layer] > 0.5]
        answers.append(
            f"{model}, {attribute}: image positions restore {img.get(-1, float('nan')):.2f} at the adapter and "
            f"{img.iloc[-1]:.2f} at the last layer; text positions first restore >0.5 at "
            f"{'layer ' + str(moved[0]) if moved else 'no layer'}"
        )
    return _section(
        "Which layers and positions carry the attribute from the image to the answer?",
        answers,
        d,
        sorted(folder.glob("*.png")),
        folder,
    )


def transfer_section(folder: Path) -> str:
    t = pd.read_csv(folder / "transfer.csv")
    answers = answer_lines(t)
    cm = folder / "cross_model_summary.csv"
    if cm.is_file():
        c = pd.read_csv(cm)
        for (donor, recipient), g in c.groupby(["donor", "recipient"]):
            alone = g[g["condition"].isin(["donor", "recipient"])].set_index("condition")["accuracy"]
            adapter = g[(g["layer"] == -1) & (g["group"] == "image")]["accuracy"]
            answers.append(
                f"{donor} -> {recipient}: donor {alone.get('donor', float('nan')):.3f}, recipient "
                f"{alone.get('recipient', float('nan')):.3f}, recipient with the donor's adapter output "
                f"{adapter.iloc[0] if len(adapter) else float('nan'):.3f}"
            )
            swaps = g[(g["group"] == "weights") & (g["condition"] == "patched") & (g["layer"] >= 0)]
            every = g[g["condition"] == "all_lora"]["accuracy"]
            if len(swaps) and len(every):
                best = swaps.loc[swaps["accuracy"].idxmax()]
                answers.append(
                    f"{donor} -> {recipient}: recipient with all the donor's LoRA updates {every.iloc[0]:.3f}; "
                    f"best single block's LoRA update: block {int(best['layer'])} {best['accuracy']:.3f} "
                    f"[{best['lo']:.3f}, {best['hi']:.3f}]"
                )
    return _section(
        "Does knowledge seen only in generation data reach understanding?",
        answers,
        t,
        sorted(folder.glob("*.png")),
        folder,
    )


def attribution_section(folder: Path) -> str:
    s = pd.read_csv(folder / "layer_attributions_summary.csv")
    answers = []
    for (model, attribute), g in s.groupby(["model", "attribute"]):
        if not g["reads_image"].all():
            answers.append(f"{model} / {attribute}: the answer barely depends on the image; shares are noise")
            continue
        image = g[g["group"] == "image"].sort_values("layer")
        gone = image[image["share"] < 0.5]
        where = f"block {int(gone['layer'].iloc[0])}" if len(gone) else "no block (it stays there)"
        answers.append(f"{model} / {attribute}: most of the evidence leaves the image positions at {where}")
    return _section(
        "At which positions, block by block, does the evidence for each answer sit?",
        answers,
        s,
        sorted(folder.glob("layer_attribution_*.png")),
        folder,
    )


def mixing_section(folder: Path) -> str:
    from analyses.mixing import alignment_lines
    from analyses.mixing import answer_lines as mixing_lines

    gain, table = pd.read_csv(folder / "mixing.csv"), pd.read_csv(folder / "mixing_scores.csv")
    contrasts = pd.read_csv(folder / "alignment.csv") if (folder / "alignment.csv").is_file() else pd.DataFrame()
    return _section(
        "Does mixed training help understanding and generation, and does it need aligned spaces?",
        mixing_lines(gain, table) + alignment_lines(contrasts, table),
        gain,
        sorted(folder.glob("*.png")),
        folder,
    )


def encoder_section(folder: Path) -> str:
    from analyses.encoder_inputs import answer_lines as encoder_lines

    table = pd.read_csv(folder / "encoder_probes.csv")
    return _section(
        "Do the input spaces carry what the questions ask (is a failure to answer blindness or not reading)?",
        encoder_lines(table),
        table,
        sorted(folder.glob("*.png")),
        folder,
    )


KINDS = (
    ("encoder_probes.csv", encoder_section),
    ("eval/summary.csv", eval_section),
    ("probes.csv", probe_section),
    ("patching_summary.csv", patching_section),
    ("transfer.csv", transfer_section),
    ("mixing.csv", mixing_section),
    ("layer_attributions_summary.csv", attribution_section),
)

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}img{max-width:100%}
.answer li{margin:.2em 0}.src{color:#777;font-size:80%}table.t{border-collapse:collapse;font-size:75%}
table.t td,table.t th{padding:2px 6px;border-bottom:1px solid #ddd}figure{margin:1em 0}"""


def write_report(folders: list[str | Path], out: str | Path, title: str = "unilens report") -> Path:
    sections = []
    for folder in map(Path, folders):
        matched = [fn for marker, fn in KINDS if (folder / marker).is_file()]
        if not matched:
            markers = ", ".join(m for m, _ in KINDS)
            raise UnilensError(f"{folder} holds no unilens results (looked for {markers})")
        sections += [fn(folder) for fn in matched]
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title><style>{STYLE}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out
