"""`unilens probe CONFIG`: layer-wise and cross-context probes for several trained models, as tidy CSVs and plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analyses.plots import plot_cross_context, plot_probe_layers, plot_selectivity
from models.build import build_spaces, load_checkpoint
from models.checkpoint import read_manifest
from models.evaluate import last_checkpoints
from models.presets import manifest_preset
from models.sequence import CONTEXTS, Encoder
from probes.activations import DEFAULT_GROUP, POSITION_GROUPS, PROMPT_END, QUESTION_OF, asks, collect
from probes.linear import cross_context, layerwise
from tasks.records import load_dataset
from tasks.splits import arm_label
from unilens.errors import UnilensError
from unilens.io import atomic_write_text

ATTRIBUTES = ["weather", "weather_pos", "battery_pos", "battery_decile"]
PLACES = {
    PROMPT_END: "the answer's position",
    "question": "the question's tokens",
    "gen_prompt": "the prompt's tokens",
    "weather_region": "the weather icon's image tokens",
    "battery_region": "the battery's image tokens",
}


@dataclass
class ProbeConfig:
    models: dict[str, str] = field(default_factory=dict)  # name -> checkpoint or run folder (its last checkpoint)
    out: str = "runs/probes"
    attributes: list[str] = field(default_factory=lambda: list(ATTRIBUTES))
    where: str = "post"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    n_folds: int = 5
    limit: int = 0  # first N records only (0: all)
    batch_size: int = 32
    store_activations: bool = False
    # the positions each context's activations are pooled over: tag names, or "prompt_end" (understanding only: the
    # last position of the prompt that asks the probed attribute's question, where its answer is read out)
    groups: dict[str, list[str]] = field(default_factory=lambda: {c: [g] for c, g in DEFAULT_GROUP.items()})
    split: str = "test"  # which records to probe: "test", or "train" for more examples of a question's turn

    def __post_init__(self) -> None:
        unknown = sorted(set(self.groups) - set(CONTEXTS))
        if unknown:
            raise UnilensError(f"probe groups: unknown context(s) {unknown}; use {list(CONTEXTS)}")
        for context, names in self.groups.items():
            bad = [g for g in names if g not in POSITION_GROUPS]
            if bad:
                raise UnilensError(
                    f"probe groups.{context}: unknown position group(s) {bad}; choose among {list(POSITION_GROUPS)}"
                )
        if PROMPT_END in self.groups.get("generate", []):
            raise UnilensError("probe groups.generate: 'prompt_end' is an understanding group (a question's answer)")
        if PROMPT_END in self.groups.get("understand", []):
            no_question = [a for a in self.attributes if a not in QUESTION_OF]
            if no_question:
                raise UnilensError(f"'prompt_end' needs a question per attribute; none asks {no_question}")
        if self.split not in ("test", "train"):
            raise UnilensError(f"probe split '{self.split}': use 'test' or 'train'")


def activation_sets(ckpt: Path, cfg: ProbeConfig, store: Path | None = None):
    """{(context, group, question or None): ActivationSet}; "prompt_end" sets are collected once per question the
    probed attributes are read from (battery and battery_decile share one), on the records that ask it."""
    built, manifest = load_checkpoint(ckpt)
    dataset = load_dataset(manifest["dependencies"]["dataset"]["path"])
    und_space, gen_space = build_spaces(built, built.model.cfg, dataset, manifest["config"]["cache_dir"])
    records_of = getattr(dataset, cfg.split)
    sets = {}
    for context, task in (("understand", "vqa"), ("generate", "generation")):
        records = [r for r in records_of if r["task"] == task]
        enc = Encoder(built.tokenizer, (und_space if context == "understand" else gen_space).num_tokens)
        for group in cfg.groups.get(context, []):
            questions = dict.fromkeys(QUESTION_OF[a] for a in cfg.attributes) if group == PROMPT_END else [None]
            for question in questions:
                chosen = [r for r in records if question is None or asks(r, question)]
                chosen = chosen[: cfg.limit] if cfg.limit else chosen
                name = "_".join(x for x in (context, group, question) if x)
                sets[(context, group, question)] = collect(
                    built.model,
                    chosen,
                    und_space,
                    gen_space,
                    enc,
                    context,
                    group=group,
                    where=cfg.where,
                    batch_size=cfg.batch_size,
                    store=store / name if store else None,
                    asking=question,
                )
    return sets, manifest


def check_questions_asked(ckpts: dict[str, Path], cfg: ProbeConfig) -> None:
    """Before any model is run: every model's dataset must have records asking each question whose answer position
    ("prompt_end") is probed, else that probe has no examples (a time-only model's data asks no weather question)."""
    if PROMPT_END not in cfg.groups.get("understand", []):
        return
    for name, ckpt in ckpts.items():
        path = read_manifest(ckpt)["dependencies"]["dataset"]["path"]
        records = [r for r in getattr(load_dataset(path), cfg.split) if r["task"] == "vqa"]
        for attribute in cfg.attributes:
            question = QUESTION_OF[attribute]
            if not any(asks(r, question) for r in records):
                raise UnilensError(
                    f"probe model '{name}': no {cfg.split} VQA record of its dataset {path} asks the '{question}' "
                    f"question, so '{PROMPT_END}' has no examples for '{attribute}'; drop '{attribute}' or this "
                    f"model, or probe it at 'image' only in a config of its own"
                )


def _set_for(sets: dict, context: str, group: str, attribute: str):
    return sets[(context, group, QUESTION_OF[attribute] if group == PROMPT_END else None)]


def run_probes(cfg: ProbeConfig, log=print) -> dict[str, pd.DataFrame]:
    if not cfg.models:
        raise UnilensError("probe config lists no models: add `models: {name: path/to/run_or_checkpoint}`")
    ckpts = last_checkpoints(cfg.models)
    check_questions_asked(ckpts, cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    layer_rows, cross_rows = [], []
    for name, ckpt in ckpts.items():
        store = out / "activations" / name if cfg.store_activations else None
        sets, manifest = activation_sets(ckpt, cfg, store)
        tags = {
            "variant": manifest["variant"],
            "preset": manifest_preset(manifest),
            "mixture": arm_label(manifest["arm"]),
            "checkpoint": str(ckpt),
        }
        for attribute in cfg.attributes:
            for context, groups in cfg.groups.items():
                for group in groups:
                    acts = _set_for(sets, context, group, attribute)
                    rows = layerwise(acts, attribute, cfg.seeds, cfg.n_folds, name)
                    layer_rows.append(rows.assign(group=group, n_examples=len(acts.meta), **tags))
            if all(DEFAULT_GROUP[c] in cfg.groups.get(c, []) for c in CONTEXTS):
                pooled = {c: _set_for(sets, c, DEFAULT_GROUP[c], attribute) for c in CONTEXTS}
                for tr, te in (("generate", "understand"), ("understand", "generate")):
                    cross_rows.append(cross_context(pooled[tr], pooled[te], attribute, cfg.seeds, name).assign(**tags))
        counts = ", ".join(f"{'/'.join(x for x in k if x)}: {len(v.meta)}" for k, v in sets.items())
        log(f"[probe] {name}: examples probed per set: {counts}")
    layers = pd.concat(layer_rows, ignore_index=True)
    cross = pd.concat(cross_rows, ignore_index=True) if cross_rows else pd.DataFrame()
    atomic_write_text(out / "probes.csv", layers.to_csv(index=False))
    if cross_rows:
        atomic_write_text(out / "cross_context.csv", cross.to_csv(index=False))
    for attribute in cfg.attributes:
        for context, groups in cfg.groups.items():
            for group in groups:
                d = layers[(layers["context"] == context) & (layers["group"] == group)]
                default = group == DEFAULT_GROUP[context]
                where = "" if default else f", at {PLACES.get(group, f'the {group} positions')}"
                plot_probe_layers(
                    d,
                    attribute,
                    out / (f"probe_{attribute}_{context}" + ("" if default else f"_{group}") + ".png"),
                    title=f"Where is '{attribute}' decodable ({context} context{where})?",
                )
        if cross_rows:
            plot_cross_context(cross, attribute, out / f"cross_context_{attribute}.png")
    understand = layers[(layers["context"] == "understand") & (layers["group"] == DEFAULT_GROUP["understand"])]
    if len(understand):
        plot_selectivity(understand, out / "selectivity_understand.png")
    return {"probes": layers, "cross_context": cross}
