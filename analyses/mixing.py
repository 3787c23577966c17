"""`unilens mixing CONFIG`: does mixed training help both tasks (finding 1), and does it need aligned spaces
(finding 2)?

Over evaluated runs of one or more variants, at every evaluated checkpoint (the fraction of training data seen):
    understanding  multiple choice among every value of each image-read attribute (weather and the two icon
                   positions), per question: less floored by learned priors than greedy exact match
    generation     the attributes read back from each generated image (reader or feature probes), per image
and the gains mixed minus understanding-only (understanding) and mixed minus generation-only (generation), per
variant x distortion x preset x fraction, with test images paired between arms and resampled (seeds pooled per
image). Distortion strengths come from each run's config, so finding 2 is the gain plotted against them, and
tested as differences of gains (`alignment.csv`): aligned minus misaligned variants, undistorted minus distorted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from analyses.plots import plot_mixing_curves, plot_mixing_distortion
from models.checkpoint import LATER_FIELDS, later_field
from models.evaluate import CHOICE_ATTRIBUTES, choice_predictions
from tasks.scoring import bootstrap_ci
from tasks.world import ATTRIBUTE_VALUES
from unilens.errors import UnilensError
from unilens.io import atomic_write_text

KEYS = ["variant", "input_distortion", "output_distortion", "preset"]
SINGLE = {"understanding": "und-only", "generation": "gen-only"}


@dataclass
class MixingConfig:
    models: dict[str, str] = field(default_factory=dict)  # name -> run folder with eval/ (vqa, choices, generation)
    out: str = "runs/mixing"
    attributes: list[str] = field(default_factory=lambda: list(CHOICE_ATTRIBUTES))
    n_boot: int = 1000
    seed: int = 0


def _run_config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}


def _distortions(train_config: dict) -> dict[str, float]:
    model = train_config.get("model", {})
    return {k: float(model.get(k, 0.0)) for k in ("input_distortion", "output_distortion")}


def recipe(train_config: dict) -> str:
    """What must be equal for two runs' scores to be compared: the data and the optimisation (the arm, variant,
    preset and distortion are what a comparison varies)."""
    keys = ("dataset", "epochs", "batch_size", "lr_adapters", "lr_llm", "max_steps")
    text = ", ".join(f"{k}={train_config[k]}" for k in keys if k in train_config)
    # fields added later (to the model, or the rate schedule) change the run: named only off their defaults, so
    # recipes written before they existed stay the same
    for path, default in LATER_FIELDS.items():
        if (value := later_field(train_config, path)) != default:
            text += f", {path[-1]}={value}"
    return text


def per_item(name: str, run: str | Path, attributes: list[str]) -> pd.DataFrame:
    """One row per scored item: task (understanding: a question; generation: an image x attribute), image,
    attribute, fraction and score, tagged with the run's variant, preset, mixture, seed and distortions."""
    run = Path(run)
    folder = run / "eval"
    if not (folder / "choices.csv").is_file() and not (folder / "generation.csv").is_file():
        raise UnilensError(f"{run}: no eval tables; run `unilens eval {run} --checkpoints all` first")
    parts = []
    if (folder / "choices.csv").is_file():
        choices = pd.read_csv(folder / "choices.csv")
        choices = choices[choices["attribute"].isin(attributes)]
        if len(choices):
            picked = choice_predictions(choices.astype({"value": str, "candidate": str}))
            parts.append(picked.assign(task="understanding", score=picked["choice"]))
    if (folder / "generation.csv").is_file():
        gen = pd.read_csv(folder / "generation.csv")
        gen = gen[gen["attribute"].isin(attributes)]
        if len(gen):
            parts.append(gen.assign(task="generation", score=gen["correct"]))
    if not parts:
        raise UnilensError(f"{run}: its eval tables score none of the attributes {attributes}")
    cols = ["task", "image", "attribute", "fraction", "step", "variant", "preset", "mixture", "seed", "score"]
    items = pd.concat([p[cols] for p in parts], ignore_index=True)
    # a task the arm never trained on is not a score of that arm (und-only models still emit image tokens)
    untrained = {"understanding": "gen-only", "generation": "und-only"}
    items = items[[untrained[t] != m.split(":")[0] for t, m in zip(items["task"], items["mixture"], strict=True)]]
    if not len(items):
        raise UnilensError(f"{run}: its eval tables hold no task its arm trained on")
    chance = items["attribute"].map(lambda a: 1 / len(ATTRIBUTE_VALUES[a]))
    config = _run_config(run)
    return items.assign(model=name, chance=chance, recipe=recipe(config), **_distortions(config))


def scores(items: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Mean score with an image-resampled CI per model x task x fraction."""
    rows = []
    for key, g in items.groupby([*KEYS, "mixture", "task", "fraction"], sort=True):
        mean, lo, hi = bootstrap_ci(g["score"].to_numpy(), g["image"].to_numpy(), n_boot=n_boot, seed=seed)
        rows.append(
            {
                **dict(zip([*KEYS, "mixture", "task", "fraction"], key, strict=True)),
                "chance": g["chance"].mean(),
                "mean": mean,
                "lo": lo,
                "hi": hi,
                "n": len(g),
                "seeds": g["seed"].nunique(),
            }
        )
    return pd.DataFrame(rows)


def _paired_gains(items: pd.DataFrame):
    """Yield (variant x distortion x preset x task x fraction, single-task arm, per-image mixed minus that arm over
    the images both scored) for the single-task arm and its step-matched control ("und-only:step-matched")."""
    for key, g in items.groupby([*KEYS, "task", "fraction"], sort=True):
        per_image = g.groupby(["mixture", "image"])["score"].mean()
        arms = set(per_image.index.get_level_values(0))
        if "mixed" not in arms:
            continue
        for single in sorted(a for a in arms if a.split(":")[0] == SINGLE[key[len(KEYS)]]):
            a, b = per_image["mixed"], per_image[single]
            images = a.index.intersection(b.index)
            if len(images):
                yield key, single, a[images] - b[images]


def gains(items: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Mixed minus the single-task arm per variant x distortion x preset x task x fraction, images paired."""
    rows = []
    for key, single, diff in _paired_gains(items):
        mean, lo, hi = bootstrap_ci(diff.to_numpy(), n_boot=n_boot, seed=seed)
        rows.append(
            {
                **dict(zip([*KEYS, "task", "fraction"], key, strict=True)),
                "versus": single,
                "gain": mean,
                "lo": lo,
                "hi": hi,
                "n_images": len(diff),
            }
        )
    return pd.DataFrame(rows)


ALIGNED, MISALIGNED = ("sem-sem", "vq-vq"), ("sem-vq", "vq-sem")


def alignment(items: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Finding 2 as differences of gains, images paired (every variant is scored on the same test images):
    `aligned - misaligned`: the mean gain of sem-sem and vq-vq minus that of sem-vq and vq-sem, undistorted;
    `undistorted - distorted`: a variant's gain without minus with an affine distortion of strength s.
    Positive means alignment helps the gain, as the paper reports."""
    # one column per variant x distortion x preset x task x fraction (plain single-task arm only), one row per image
    per_image = pd.DataFrame({key: diff for key, single, diff in _paired_gains(items) if ":" not in single})
    rows = []

    def add(contrast, variant, rest, a, b, distortion=(0.0, 0.0)):
        diff = (a - b).dropna()
        if not len(diff):
            return
        mean, lo, hi = bootstrap_ci(diff.to_numpy(), n_boot=n_boot, seed=seed)
        preset, task, fraction = rest
        rows.append(
            {
                "contrast": contrast,
                "variant": variant,
                "input_distortion": distortion[0],
                "output_distortion": distortion[1],
                "preset": preset,
                "task": task,
                "fraction": fraction,
                "versus": SINGLE[task],
                "difference": mean,
                "lo": lo,
                "hi": hi,
                "n_images": len(diff),
            }
        )

    by_rest: dict[tuple, dict] = {}
    for (variant, din, dout, preset, task, fraction), col in per_image.items():
        by_rest.setdefault((preset, task, fraction), {})[(variant, din, dout)] = col
    for rest, gains_of in sorted(by_rest.items()):
        aligned = [gains_of[(v, 0.0, 0.0)] for v in ALIGNED if (v, 0.0, 0.0) in gains_of]
        misaligned = [gains_of[(v, 0.0, 0.0)] for v in MISALIGNED if (v, 0.0, 0.0) in gains_of]
        if aligned and misaligned:
            a = pd.concat(aligned, axis=1).mean(axis=1, skipna=False)
            b = pd.concat(misaligned, axis=1).mean(axis=1, skipna=False)
            add("aligned - misaligned", "+".join(ALIGNED) + " vs " + "+".join(MISALIGNED), rest, a, b)
        for (variant, din, dout), col in sorted(gains_of.items()):
            if (din or dout) and (variant, 0.0, 0.0) in gains_of:
                add("undistorted - distorted", variant, rest, gains_of[(variant, 0.0, 0.0)], col, (din, dout))
    columns = ["contrast", "variant", "input_distortion", "output_distortion", "preset", "task", "fraction"]
    return pd.DataFrame(rows, columns=[*columns, "versus", "difference", "lo", "hi", "n_images"])


def alignment_lines(contrasts: pd.DataFrame, table: pd.DataFrame | None = None) -> list[str]:
    """One sentence per alignment contrast at the last fraction both sides reached; with the score table, a
    contrast whose every arm scores at chance is flagged as a comparison of guesses."""
    if not len(contrasts):
        return []
    at_chance = _not_above_chance(table)
    last = contrasts[contrasts["fraction"] == contrasts.groupby(["contrast", "variant"])["fraction"].transform("max")]
    lines = []
    for r in last.itertuples():
        verdict = (
            "alignment helps the gain"
            if r.lo > 0
            else "alignment hurts the gain"
            if r.hi < 0
            else "no detectable effect (CI includes 0)"
        )
        if r.contrast == "aligned - misaligned":
            what, sides = r.variant, [(v, 0.0, 0.0) for v in (*ALIGNED, *MISALIGNED)]
        else:
            what = f"{r.variant}, distortion in {r.input_distortion:g} / out {r.output_distortion:g}"
            sides = [(r.variant, 0.0, 0.0), (r.variant, r.input_distortion, r.output_distortion)]
        arms = {(*side, r.preset, arm, r.task, r.fraction) for side in sides for arm in ("mixed", r.versus)}
        if arms <= at_chance:
            verdict += "; every arm scores at chance, so this compares guesses"
        lines.append(
            f"finding 2, {r.task} ({r.preset}): gain {r.contrast} ({what}) {r.difference:+.3f} "
            f"[{r.lo:+.3f}, {r.hi:+.3f}] at fraction {r.fraction:g}, {verdict}"
        )
    return lines


def _not_above_chance(table: pd.DataFrame | None) -> set[tuple]:
    """(variant, distortions, preset, mixture, task, fraction) whose score's CI reaches down to chance."""
    if table is None or not len(table):
        return set()
    low = table[table["lo"] <= table["chance"]]
    return set(map(tuple, low[[*KEYS, "mixture", "task", "fraction"]].itertuples(index=False)))


def answer_lines(gain: pd.DataFrame, table: pd.DataFrame | None = None) -> list[str]:
    """One sentence per variant, preset, distortion and task at the last fraction, computed from the numbers; with
    the score table, a gain between two arms that both score at chance is flagged as a comparison of guesses."""
    lines = []
    at_chance = _not_above_chance(table)
    if not len(gain):
        return ["no mixed / single-task pair was evaluated: nothing to compare"]
    last = gain[gain["fraction"] == gain.groupby(KEYS)["fraction"].transform("max")]
    for r in last.itertuples():
        verdict = "helps" if r.lo > 0 else "hurts" if r.hi < 0 else "no detectable effect (CI includes 0)"
        distortion = (
            ""
            if r.input_distortion == r.output_distortion == 0
            else (f", distortion in {r.input_distortion:g} / out {r.output_distortion:g}")
        )
        keys = (r.variant, r.input_distortion, r.output_distortion, r.preset)
        if {(*keys, arm, r.task, r.fraction) for arm in ("mixed", r.versus)} <= at_chance:
            verdict += "; both arms score at chance, so this compares guesses"
        lines.append(
            f"{r.variant} ({r.preset}{distortion}), {r.task}: mixed - {r.versus} {r.gain:+.3f} "
            f"[{r.lo:+.3f}, {r.hi:+.3f}] at fraction {r.fraction:g}, {verdict}"
        )
    return lines


def run_mixing(cfg: MixingConfig, log=print) -> pd.DataFrame:
    if not cfg.models:
        raise UnilensError("mixing config lists no models: add `models: {name: path/to/run}`")
    unknown = [a for a in cfg.attributes if a not in CHOICE_ATTRIBUTES]
    if unknown:
        raise UnilensError(f"attributes {unknown} are not scored by choice; use some of {list(CHOICE_ATTRIBUTES)}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    items = pd.concat([per_item(n, r, cfg.attributes) for n, r in cfg.models.items()], ignore_index=True)
    recipes = items.groupby(KEYS)["recipe"].unique()
    mixed_up = recipes[recipes.map(len) > 1]
    if len(mixed_up):
        key, found = mixed_up.index[0], list(mixed_up.iloc[0])
        models = sorted(items.loc[items.set_index(KEYS).index == key, "model"].unique())
        group = dict(zip(KEYS, map(str, key), strict=True))
        raise UnilensError(
            f"runs {models} ({group}) were trained with different recipes {found}: their "
            "gains would pool unlike runs; list runs of one dataset and training recipe per mixing config"
        )
    table, gain = scores(items, cfg.n_boot, cfg.seed), gains(items, cfg.n_boot, cfg.seed)
    atomic_write_text(out / "mixing_scores.csv", table.to_csv(index=False))
    atomic_write_text(out / "mixing.csv", gain.to_csv(index=False))
    contrasts = alignment(items, cfg.n_boot, cfg.seed)
    atomic_write_text(out / "alignment.csv", contrasts.to_csv(index=False))
    plot_mixing_curves(table, out / "mixing_curves.png")
    if len(gain) and gain[["input_distortion", "output_distortion"]].drop_duplicates().shape[0] > 1:
        plot_mixing_distortion(gain, out / "mixing_distortion.png")
    for line in answer_lines(gain, table) + alignment_lines(contrasts, table):
        log(f"[mixing] {line}")
    return gain
