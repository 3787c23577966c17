"""`unilens transfer CONFIG`: does knowledge seen only in generation data reach understanding?

For each model (evaluated with `unilens eval`, run here if its eval folder lacks the tables): on test questions
about the biased attribute whose true value was held out of the understanding data,
    greedy     exact-match accuracy of the decoded answer (the paper's metric; a learned prior can floor it at 0)
    held-out   multiple choice among the held-out values only (chance 1/k): does the model rank the right unseen
               value above the other unseen ones, whatever prior it learned for the seen value?
with bootstrap CIs over images, and the mixed minus understanding-only difference per preset (images paired).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analyses.plots import plot_cross_model, plot_transfer, plot_transfer_by_preset
from models.evaluate import CHOICE_ATTRIBUTES, EvalConfig, choice_predictions, run_eval
from tasks.scoring import bootstrap_ci
from tasks.world import ATTRIBUTE_VALUES
from unilens.errors import UnilensError
from unilens.io import atomic_write_text


@dataclass
class TransferConfig:
    models: dict[str, str] = field(default_factory=dict)  # name -> run folder (evaluated at its last checkpoint)
    attribute: str = "weather"
    held_out: list[str] = field(default_factory=lambda: ["cloudy", "raining"])
    out: str = "runs/transfer_report"
    n_boot: int = 2000
    seed: int = 0
    # cross-model patching: each entry {donor: name, recipient: name} names two of `models`
    cross_model: list[dict[str, str]] = field(default_factory=list)
    cross_model_groups: list[str] = field(default_factory=lambda: ["image", "all"])
    cross_model_weights: bool = True  # also swap single blocks' LoRA updates (LoRA pairs only)


def _eval_tables(run: str, log) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    folder = Path(run) / "eval"
    if not (folder / "choices.csv").is_file() or not (folder / "vqa.csv").is_file():
        log(f"[transfer] {run}: no eval tables, running `unilens eval` (no captions, no generation)")
        run_eval(run, folder, EvalConfig(captions=False, generation=False), None)
    vqa, choices = pd.read_csv(folder / "vqa.csv"), pd.read_csv(folder / "choices.csv")
    last = vqa["step"].max()
    vqa, choices = vqa[vqa["step"] == last], choices[choices["step"] == last]
    first = vqa.iloc[0]
    tags = {"variant": first["variant"], "preset": first["preset"], "mixture": first["mixture"]}
    return vqa, choices, {**tags, "seed": int(first["seed"]), "step": int(last)}


def per_question(vqa: pd.DataFrame, choices: pd.DataFrame, attribute: str, held_out: list[str]) -> pd.DataFrame:
    """One row per test question about `attribute` whose truth is held out: greedy and held-out choice scores."""
    choices = choices.assign(value=choices["value"].astype(str), candidate=choices["candidate"].astype(str))
    picked = choice_predictions(choices[choices["attribute"] == attribute], among={attribute: held_out})
    greedy = vqa[(vqa["attribute"] == attribute) & vqa["value"].astype(str).isin(held_out)]
    merged = picked.merge(greedy[["image", "turn", "exact"]], on=["image", "turn"], how="left")
    return merged.rename(columns={"choice": "held_out_choice", "exact": "greedy"})


def run_transfer(cfg: TransferConfig, log=print) -> pd.DataFrame:
    if not cfg.models:
        raise UnilensError("transfer config lists no models: add `models: {name: path/to/run}`")
    if len(cfg.held_out) < 2:
        raise UnilensError("held_out needs at least two values: choice among one value is always right")
    known = [str(v) for v in ATTRIBUTE_VALUES.get(cfg.attribute, ())]
    if cfg.attribute not in CHOICE_ATTRIBUTES:
        raise UnilensError(f"transfer is scored by multiple choice: attribute must be one of {list(CHOICE_ATTRIBUTES)}")
    unknown = [v for v in cfg.held_out if v not in known]
    if unknown:
        raise UnilensError(f"held_out values {unknown} are not values of '{cfg.attribute}' ({known})")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    questions, rows = [], []
    for name, run in cfg.models.items():
        vqa, choices, tags = _eval_tables(run, log)
        q = per_question(vqa, choices, cfg.attribute, cfg.held_out).assign(model=name, **tags)
        if not len(q):
            raise UnilensError(f"{run}: no test questions about '{cfg.attribute}' with values {cfg.held_out}")
        questions.append(q)
        for metric, chance in (("held_out_choice", 1 / len(cfg.held_out)), ("greedy", 0.0)):
            mean, lo, hi = bootstrap_ci(q[metric].to_numpy(), q["image"].to_numpy(), n_boot=cfg.n_boot, seed=cfg.seed)
            rows.append(
                {
                    "model": name,
                    **tags,
                    "metric": metric,
                    "mean": mean,
                    "lo": lo,
                    "hi": hi,
                    "chance": chance,
                    "n": len(q),
                }
            )
    table = pd.DataFrame(rows)
    diffs = _differences(pd.concat(questions, ignore_index=True), cfg)
    table = pd.concat([table, diffs], ignore_index=True)
    atomic_write_text(out / "transfer.csv", table.to_csv(index=False))
    atomic_write_text(out / "transfer_questions.csv", pd.concat(questions).to_csv(index=False))
    plot_transfer(table, cfg.attribute, cfg.held_out, out / f"transfer_{cfg.attribute}.png")
    if len(diffs) and diffs["preset"].nunique() > 1:
        plot_transfer_by_preset(table, cfg.attribute, out / f"transfer_by_preset_{cfg.attribute}.png")
    if cfg.cross_model:
        run_cross_model(cfg, out, log)
    return table


def run_cross_model(cfg: TransferConfig, out: Path, log=print) -> pd.DataFrame:
    """Per donor/recipient pair and layer: held-out choice accuracy of the recipient with the donor's activations."""
    from models.build import build_spaces, load_checkpoint
    from models.evaluate import checkpoints_of
    from probes.cross_model import cross_model_sweep, has_lora
    from tasks.records import load_dataset

    parts = []
    for pair in cfg.cross_model:
        missing = [pair.get(k) for k in ("donor", "recipient") if pair.get(k) not in cfg.models]
        if missing:
            raise UnilensError(f"cross_model names {missing}, which are not in models {sorted(cfg.models)}")
        donor, _ = load_checkpoint(checkpoints_of(cfg.models[pair["donor"]], "last")[0])
        recipient, manifest = load_checkpoint(checkpoints_of(cfg.models[pair["recipient"]], "last")[0])
        dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
        und, gen = build_spaces(recipient, recipient.model.cfg, dataset, manifest["config"]["cache_dir"])
        records = [r for r in dataset.test if r["task"] == "vqa"]
        weights = cfg.cross_model_weights and has_lora(donor.model) and has_lora(recipient.model)
        if cfg.cross_model_weights and not weights:
            log(f"[transfer] {pair['donor']} -> {pair['recipient']}: no LoRA in both, so no weight swaps")
        df = cross_model_sweep(
            donor,
            recipient,
            records,
            und,
            gen,
            cfg.attribute,
            list(cfg.held_out),
            tuple(cfg.cross_model_groups),
            weights=weights,
        )
        parts.append(df.assign(donor=pair["donor"], recipient=pair["recipient"]))
        log(f"[transfer] cross-model {pair['donor']} -> {pair['recipient']}: {df['image'].nunique()} images")
    per_question = pd.concat(parts, ignore_index=True)
    rows = []
    keys = ["donor", "recipient", "condition", "layer", "group"]
    for key, g in per_question.groupby(keys, dropna=False, sort=True):
        mean, lo, hi = bootstrap_ci(g["correct"].to_numpy(), g["image"].to_numpy(), n_boot=cfg.n_boot, seed=cfg.seed)
        rows.append({**dict(zip(keys, key, strict=True)), "accuracy": mean, "lo": lo, "hi": hi, "n": len(g)})
    summary = pd.DataFrame(rows).assign(chance=1 / len(cfg.held_out))
    atomic_write_text(out / "cross_model.csv", per_question.to_csv(index=False))
    atomic_write_text(out / "cross_model_summary.csv", summary.to_csv(index=False))
    plot_cross_model(summary, cfg.attribute, out / f"cross_model_{cfg.attribute}.png")
    return summary


def _differences(q: pd.DataFrame, cfg: TransferConfig) -> pd.DataFrame:
    """Mixed minus understanding-only per variant and preset (seeds pooled), resampling images jointly (both
    arms saw the same test images)."""
    rows = []
    for (variant, preset), d in q.groupby(["variant", "preset"]):
        arms = {m: g for m, g in d.groupby("mixture")}
        if not {"mixed", "und-only"} <= set(arms):
            continue
        for metric in ("held_out_choice", "greedy"):
            a = arms["mixed"].groupby("image")[metric].mean()
            b = arms["und-only"].groupby("image")[metric].mean()
            images = a.index.intersection(b.index)
            delta = (a[images] - b[images]).to_numpy()  # one value per image: resampling them pairs the arms
            mean, lo, hi = bootstrap_ci(delta, n_boot=cfg.n_boot, seed=cfg.seed)
            rows.append(
                {
                    "model": f"mixed - und-only ({variant}, {preset})",
                    "variant": variant,
                    "preset": preset,
                    "mixture": "difference",
                    "metric": metric,
                    "mean": mean,
                    "lo": lo,
                    "hi": hi,
                    "chance": 0.0,
                    "n": len(delta),
                }
            )
    return pd.DataFrame(rows)


def answer_lines(table: pd.DataFrame) -> list[str]:
    """One sentence per preset, computed from the numbers: does mixed training beat understanding-only on the
    held-out values, with its CI?"""
    lines = []
    rows = table[(table["mixture"] == "difference") & (table["metric"] == "held_out_choice")]
    for r in rows.itertuples():
        if r.lo > 0:
            verdict = "generation data helps understanding of the held-out values"
        elif r.hi < 0:
            verdict = "generation data hurts understanding of the held-out values"
        else:
            verdict = "no evidence either way (the CI includes 0)"
        lines.append(f"{r.model}, held-out multiple choice: {r.mean:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}], {verdict}")
    return lines
