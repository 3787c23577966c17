"""`unilens compare`: is arm A better than arm B, with a CI that counts the training runs as well as the test images?

Each arm is one or more eval folders (`unilens eval RUN --checkpoints last`), typically seeds of one recipe. Every
measure is taken per test question (the image gap, the greedy answer's exact / soft / hour score, the multiple
choice, the generated image's read-back), restricted to the questions every folder asked, and compared with a
two-level bootstrap: each replicate draws the test images once for both arms (both saw the same images, so the arms
stay paired) and, within each arm, draws its runs with replacement. With one run per arm this is the paired image
bootstrap of `unilens eval` (the arm's own interval equals its summary.csv row); with several, the spread between
seeds widens the interval, as it must: two seeds of one recipe differed by 1.2 nats of time image gap where the
image bootstrap gave each +-0.5 (docs/results/2026-12-07). With few runs the interval is still too narrow: a
bootstrap over n runs keeps (n-1)/n of their variance, and two runs say little about the spread of seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from models.evaluate import choice_predictions, image_gap
from unilens.errors import UnilensError
from unilens.io import atomic_write_text

# (task, table file, metrics, the columns that name one question)
MEASURES = (
    ("image_gap", "image_reliance.csv", ("gap",), ("image", "attribute", "turn")),
    ("vqa", "vqa.csv", ("exact", "soft", "hour"), ("image", "attribute", "turn")),
    ("vqa_first_turn", "vqa.csv", ("exact", "soft", "hour"), ("image", "attribute", "turn")),
    ("vqa_choice", "choices.csv", ("choice",), ("image", "attribute", "turn")),
    ("generation", "generation.csv", ("correct",), ("image", "attribute")),
)


def _one_checkpoint(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    if "step" in table and table["step"].nunique() > 1:
        steps = sorted(table["step"].unique().tolist())
        raise UnilensError(
            f"{path} holds {len(steps)} checkpoints (steps {steps}); compare needs one per run: evaluate with "
            "--checkpoints last (or one step) into its own folder"
        )
    return table


def read_eval_table(folder: str | Path, file: str) -> pd.DataFrame | None:
    """One of an eval folder's tables (None when the eval skipped it), refused when it holds several checkpoints."""
    path = Path(folder) / file
    return _one_checkpoint(pd.read_csv(path), path) if path.exists() else None


def question_table(folder: str | Path | dict[str, pd.DataFrame | None], task: str) -> pd.DataFrame:
    """One row per question of `task` in an eval folder, with its metrics (empty when the eval skipped it). `folder`
    may also be the folder's tables already read, by file name."""
    spec = {m[0]: m for m in MEASURES}
    if task not in spec:
        raise UnilensError(f"unknown task '{task}'; choose one of {list(spec)}")
    _, file, metrics, keys = spec[task]
    table = folder.get(file) if isinstance(folder, dict) else read_eval_table(folder, file)
    if table is None:
        return pd.DataFrame(columns=[*keys, *metrics])
    if task == "image_gap":
        table = image_gap(table)
    elif task == "vqa_first_turn":
        table = table[table["turn"] == 0]
    elif task == "vqa_choice":
        table = choice_predictions(table)
    keep = [m for m in metrics if m in table and table[m].notna().any()]
    return table[[*keys, *keep]]


def _read_folders(folders: Sequence[str | Path]) -> dict[str, dict[str, pd.DataFrame | None]]:
    """Every folder's tables, each file read once, by folder and file name; refused when a folder is no eval folder."""
    for folder in folders:
        if not (Path(folder) / "summary.csv").exists():
            raise UnilensError(
                f"{folder} is not an eval folder (no summary.csv); run `unilens eval RUN --out {folder}`"
            )
    files = sorted({m[1] for m in MEASURES})
    return {str(f): {file: read_eval_table(f, file) for file in files} for f in folders}


def _check_truths(loaded: dict[str, dict[str, pd.DataFrame | None]]) -> None:
    """A question asked in two folders has the same true answer in both. Why not the `build` column's dataset hash:
    it names the dataset a run trained on, and runs trained on different datasets are compared on one with `unilens
    eval --dataset`."""
    for file, keys in (("vqa.csv", ["image", "attribute", "turn"]), ("generation.csv", ["image", "attribute"])):
        truths = {
            folder: tables[file].drop_duplicates(keys).set_index(keys)["value"].astype(str)
            for folder, tables in loaded.items()
            if tables[file] is not None
        }
        if len(truths) < 2:
            continue
        (first, reference), *others = truths.items()
        for folder, values in others:
            common = reference.index.intersection(values.index)
            differ = int((reference.loc[common] != values.loc[common]).sum())
            if differ:
                raise UnilensError(
                    f"{first} and {folder} scored different datasets: {differ} of the {len(common)} questions in both "
                    f"{file} have different true answers; evaluate every run on one dataset (unilens eval --dataset "
                    "FOLDER)"
                )


def hierarchical_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    counts: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """Means and CIs of arm A, arm B and A - B from per-run, per-image sums of a measure (`a`: runs_a x images,
    `b`: runs_b x images) over `counts` questions per image. Images are drawn once per replicate for both arms,
    runs within each arm. The image draw comes first from the generator, as in `tasks.scoring.bootstrap_ci`, so
    with one run per arm the intervals are that function's."""
    rng = np.random.default_rng(seed)
    n_images = counts.shape[0]
    pick = rng.integers(0, n_images, size=(n_boot, n_images))
    weights = np.stack([np.bincount(p, minlength=n_images) for p in pick])  # replicate x image
    per_run = {}
    for name, sums in (("A", a), ("B", b)):
        run_means = (weights @ sums.T) / (weights @ counts)[:, None]  # replicate x run
        runs = rng.integers(0, sums.shape[0], size=(n_boot, sums.shape[0]))
        per_run[name] = np.take_along_axis(run_means, runs, axis=1).mean(axis=1)
    per_run["A - B"] = per_run["A"] - per_run["B"]
    point = {"A": a.sum(1).mean() / counts.sum(), "B": b.sum(1).mean() / counts.sum()}
    point["A - B"] = point["A"] - point["B"]
    alpha = (1 - level) / 2
    return {
        k: (float(point[k]), float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) for k, v in per_run.items()
    }


def _sums_per_image(tables: list[pd.DataFrame], keys: list[str], metric: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Per run and image, the metric's sum over the questions all runs asked; the questions per image; how many."""
    indexed = [t.dropna(subset=[metric]).drop_duplicates(keys).set_index(keys)[metric] for t in tables]
    common = indexed[0].index
    for s in indexed[1:]:
        common = common.intersection(s.index, sort=False)
    images = pd.Index(common.get_level_values("image")).unique()  # first appearance, as bootstrap_ci orders them
    sums = np.stack(
        [s.loc[common].groupby(level="image", sort=False).sum().reindex(images).to_numpy() for s in indexed]
    )
    counts = pd.Series(1, index=common).groupby(level="image", sort=False).sum().reindex(images).to_numpy()
    return sums, counts.astype(float), len(common)


def _sd(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def compare_evals(
    arm_a: Sequence[str | Path],
    arm_b: Sequence[str | Path],
    n_boot: int = 1000,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per task x attribute x metric x arm ("A", "B", "A - B"): mean, CI, the questions compared, the runs
    per arm and the spread of the run means (sd over seeds, NaN with one run)."""
    if not arm_a or not arm_b:
        raise UnilensError("compare needs at least one eval folder in each arm (--a FOLDER ... --b FOLDER ...)")
    folders = [*map(str, arm_a), *map(str, arm_b)]
    loaded = _read_folders(folders)
    _check_truths(loaded)
    rows = []
    for task, _, metrics, keys in MEASURES:
        if tasks is not None and task not in tasks:
            continue
        tables = [question_table(loaded[f], task) for f in folders]  # arm A's runs, then arm B's
        if any(t.empty for t in tables):
            continue
        attributes = set.intersection(*(set(t["attribute"]) for t in tables))
        for attribute in sorted(attributes):
            picked = [t[t["attribute"] == attribute] for t in tables]
            for metric in metrics:
                if any(metric not in t or t[metric].isna().all() for t in picked):
                    continue
                sums, counts, n = _sums_per_image(picked, list(keys), metric)
                if n == 0:
                    continue
                sums_a, sums_b = sums[: len(arm_a)], sums[len(arm_a) :]
                result = hierarchical_bootstrap(sums_a, sums_b, counts, n_boot=n_boot, seed=seed)
                # the arms' runs are not paired, so A - B has no spread of its own
                run_means = {"A": sums_a.sum(1) / counts.sum(), "B": sums_b.sum(1) / counts.sum()}
                for arm, (mean, lo, hi) in result.items():
                    rows.append(
                        {
                            "task": task,
                            "attribute": attribute,
                            "metric": metric,
                            "arm": arm,
                            "mean": mean,
                            "lo": lo,
                            "hi": hi,
                            "n_questions": n,
                            "n_images": len(counts),
                            "runs": {"A": len(arm_a), "B": len(arm_b)}.get(arm, len(arm_a) + len(arm_b)),
                            "run_sd": _sd(run_means.get(arm, np.array([]))),
                        }
                    )
    if not rows:
        raise UnilensError("the two arms share no scored question; were they evaluated on the same dataset and tasks?")
    return pd.DataFrame(rows)


def run_compare(
    arm_a: Sequence[str | Path],
    arm_b: Sequence[str | Path],
    out: str | Path,
    label_a: str = "A",
    label_b: str = "B",
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """compare_evals, written as out/compare.csv (with the folders of each arm) and drawn as out/compare.png."""
    from analyses.plots import plot_comparison

    table = compare_evals(arm_a, arm_b, n_boot=n_boot, seed=seed)
    table = table.assign(label_a=label_a, label_b=label_b, folders_a=" ".join(map(str, arm_a)))
    table = table.assign(folders_b=" ".join(map(str, arm_b)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.csv", table.to_csv(index=False))
    plot_comparison(table, label_a, label_b, out / "compare.png")
    return table
