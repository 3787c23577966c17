"""One function per figure, each taking a tidy DataFrame; layer on the x axis, CI bands, chance drawn.

Layer -1 is the input adapter's output ("adapter"), 0..L-1 the LLM blocks' residual stream.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from models.presets import parse_preset


def mean_ci(values: np.ndarray, level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return (np.nan, np.nan, np.nan)
    if len(values) == 1:
        return (values[0], values[0], values[0])
    rng = np.random.default_rng(seed)
    boots = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    return float(values.mean()), float(np.quantile(boots, (1 - level) / 2)), float(np.quantile(boots, (1 + level) / 2))


def cv_mean_ci(
    scores: np.ndarray, n_folds: int, level: float = 0.95, bounds: tuple[float, float] = (-np.inf, np.inf)
) -> tuple[float, float, float]:
    """Mean of repeated k-fold scores with the corrected resampled t interval (Nadeau & Bengio, 2003).

    The k x r scores of repeated k-fold share their training data (and, across repeats, their test data), so their
    spread understates how much the mean would move on a new sample: a bootstrap over them gave intervals a few
    hundredths wide at 120 test records per fold. The correction widens the variance of the mean from s²/n to
    (1/n + n_test/n_train) s², with n_test/n_train = 1/(k-1) for k folds. The interval is clipped to the metric's
    `bounds` (an accuracy's [0, 1]), which a symmetric interval near a ceiling would cross.
    """
    values = np.asarray(scores, dtype=float)
    values = values[~np.isnan(values)]
    if n_folds < 2:
        raise ValueError(f"cv_mean_ci needs the scores of at least 2 folds, got n_folds={n_folds}")
    if len(values) == 0:
        return (np.nan, np.nan, np.nan)
    mean = float(values.mean())
    if len(values) == 1:
        return (mean, mean, mean)
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * np.sqrt(
        (1 / len(values) + 1 / (n_folds - 1)) * values.var(ddof=1)
    )
    return mean, float(max(mean - half, bounds[0])), float(min(mean + half, bounds[1]))


def by_layer(
    df: pd.DataFrame,
    column: str,
    keys: list[str],
    n_folds: int | None = None,
    bounds: tuple[float, float] = (-np.inf, np.inf),
) -> pd.DataFrame:
    """Mean and CI per layer and keys: over k-fold scores (n_folds given) the corrected t interval of `cv_mean_ci`,
    otherwise a bootstrap over the rows."""
    rows = []
    for key, group in df.groupby([*keys, "layer"], sort=True):
        values = group[column].to_numpy()
        mean, lo, hi = mean_ci(values) if n_folds is None else cv_mean_ci(values, n_folds, bounds=bounds)
        rows.append({**dict(zip([*keys, "layer"], key, strict=True)), "mean": mean, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def fold_count(df: pd.DataFrame) -> int | None:
    """The k of the k-fold scores in a probe table (its `fold` column), or None for rows that are not folds."""
    return int(df["fold"].nunique()) if "fold" in df and df["fold"].nunique() > 1 else None


def score_bounds(df: pd.DataFrame) -> tuple[float, float]:
    """What a probe table's scores can reach: an accuracy [0, 1], an R² at most 1."""
    return (0.0, 1.0) if "metric" not in df or (df["metric"] == "accuracy").all() else (-np.inf, 1.0)


def _layer_axis(ax, layers: np.ndarray) -> None:
    ticks = sorted(set(layers))
    ax.set_xticks(ticks)
    ax.set_xticklabels(["adapter" if t == -1 else str(t) for t in ticks])
    ax.set_xlabel("layer (adapter output, then LLM block)" if -1 in ticks else "LLM block")


def _save(fig, path: str | Path | None):
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
    return fig


def plot_probe_layers(df: pd.DataFrame, attribute: str, path: str | Path | None = None, title: str | None = None):
    """Probe accuracy per layer with CI, control-task, shuffled and majority baselines and chance, per model."""
    d = df[df["attribute"] == attribute]
    fig, ax = plt.subplots(figsize=(7, 4))
    for model, md in d.groupby("model"):
        s = by_layer(md, "score", [], n_folds=fold_count(md), bounds=score_bounds(md))
        line = ax.plot(s["layer"], s["mean"], marker="o", label=f"{model}: probe")[0]
        ax.fill_between(s["layer"], s["lo"], s["hi"], color=line.get_color(), alpha=0.2)
        if "control" in md:
            c = by_layer(md, "control", [])
            ax.plot(c["layer"], c["mean"], ls="--", color=line.get_color(), alpha=0.7, label=f"{model}: control task")
    if "shuffled" in d:
        sh = by_layer(d, "shuffled", [])
        ax.plot(sh["layer"], sh["mean"], ls=":", color="gray", label="shuffled labels")
    if "majority" in d:
        ax.axhline(d["majority"].mean(), color="black", ls="-.", lw=1, label="majority")
    if "chance" in d:
        ax.axhline(d["chance"].mean(), color="red", ls=":", lw=1, label="chance")
    _layer_axis(ax, d["layer"].to_numpy())
    ax.set_ylabel("held-out accuracy" if d["metric"].iloc[0] == "accuracy" else "held-out R²")
    ax.set_title(title or f"Where does the LLM make '{attribute}' linearly decodable?")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_selectivity(df: pd.DataFrame, path: str | Path | None = None, title: str | None = None):
    """Selectivity (probe minus control task) per layer, one line per attribute and model."""
    d = df.dropna(subset=["selectivity"]) if "selectivity" in df else df.iloc[:0]
    fig, ax = plt.subplots(figsize=(7, 4))
    for (model, attribute), md in d.groupby(["model", "attribute"]):
        s = by_layer(md, "selectivity", [], n_folds=fold_count(md), bounds=(-1.0, 1.0))
        line = ax.plot(s["layer"], s["mean"], marker="o", label=f"{model}: {attribute}")[0]
        ax.fill_between(s["layer"], s["lo"], s["hi"], color=line.get_color(), alpha=0.2)
    ax.axhline(0, color="black", lw=1)
    _layer_axis(ax, d["layer"].to_numpy() if len(d) else np.array([-1, 0]))
    ax.set_ylabel("selectivity (accuracy - control task)")
    ax.set_title(title or "Is the probe reading the attribute, or just memorising?")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_cross_context(df: pd.DataFrame, attribute: str, path: str | Path | None = None, title: str | None = None):
    """Cross-context transfer per layer, overlaid for several models: where the two tasks share a representation."""
    d = df[df["attribute"] == attribute]
    fig, ax = plt.subplots(figsize=(7, 4))
    for (model, tr, te), md in d.groupby(["model", "train_context", "test_context"]):
        s = by_layer(md, "score", [])
        style = "-" if tr == "generate" else "--"
        line = ax.plot(s["layer"], s["mean"], style, marker="o", label=f"{model}: fit {tr} -> test {te}")[0]
        ax.fill_between(s["layer"], s["lo"], s["hi"], color=line.get_color(), alpha=0.15)
    if len(d):
        ax.axhline(d["chance"].mean(), color="red", ls=":", lw=1, label="chance")
        _layer_axis(ax, d["layer"].to_numpy())
    ax.set_ylabel("accuracy in the other context")
    ax.set_title(title or f"Do generation and understanding share a '{attribute}' representation, and where?")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _group_lines(ax, d: pd.DataFrame, value: str) -> None:
    """One line per position group over layers with its CI band, on a -0.5..1.5 scale with 0 and 1 marked."""
    for group, gd in d.groupby("group"):
        gd = gd.sort_values("layer")
        line = ax.plot(gd["layer"], gd[value], marker="o", label=group)[0]
        ax.fill_between(gd["layer"], gd["lo"], gd["hi"], color=line.get_color(), alpha=0.2)
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(1, color="gray", ls=":", lw=0.8)
    _layer_axis(ax, d["layer"].to_numpy())
    ax.set_ylim(-0.5, 1.5)


def plot_patching(summary: pd.DataFrame, attribute: str, mode: str, path: str | Path | None = None, kind="resid_post"):
    """Normalised patching effect per layer, one line per position group, one panel per model."""
    d = summary[(summary["attribute"] == attribute) & (summary["mode"] == mode)]
    d = d[(d["site_kind"] == kind) | (d["site_kind"] == "adapter")]
    models = sorted(d["model"].unique())
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(4.2 * max(1, len(models)), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models, strict=False):
        md = d[d["model"] == model]
        _group_lines(ax, md, "effect")
        note = "" if md["separates"].all() else "\n(clean and corrupt answers do not differ: noise)"
        ax.set_title(f"{model}{note}", fontsize=9)
        ax.set_ylabel(f"normalised effect ({mode})")
        ax.legend(fontsize=7, title="patched positions", title_fontsize=7)
    verb = "restores" if mode == "denoise" else "destroys"
    fig.suptitle(f"Which layers carry the image's '{attribute}' to the answer? (patching {kind} {verb} it)")
    fig.tight_layout()
    return _save(fig, path)


def plot_transfer(table: pd.DataFrame, attribute: str, held_out: list[str], path: str | Path | None = None):
    """Held-out-value scores per model (multiple choice among held-out values, and greedy), with CIs and chance."""
    d = table[table["mixture"] != "difference"]
    metrics = [("held_out_choice", f"choice among {', '.join(held_out)}"), ("greedy", "greedy exact match")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        m = d[d["metric"] == metric].reset_index(drop=True)
        x = np.arange(len(m))
        colors = ["tab:orange" if mix == "mixed" else "tab:blue" for mix in m["mixture"]]
        ax.bar(x, m["mean"], color=colors, yerr=[m["mean"] - m["lo"], m["hi"] - m["mean"]], capsize=4)
        ax.axhline(m["chance"].iloc[0] if len(m) else 0, color="red", ls=":", label="chance")
        ax.set_xticks(x)
        ax.set_xticklabels(m["model"], rotation=20, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"Does knowledge of held-out '{attribute}' values seen only in generation data reach understanding?")
    fig.tight_layout()
    return _save(fig, path)


def _preset_order(preset: str) -> tuple[int, float]:
    """adapters (no LLM layer adapted), then lora-layers by their first then last layer, then lora and full."""
    if preset == "adapters":
        return (0, 0.0)
    name, layers = parse_preset(preset)
    if name == "lora-layers":
        return (1, layers[0] + layers[-1] / 100)
    return (2, 0.0 if preset == "lora" else 1.0)


def plot_transfer_by_preset(table: pd.DataFrame, attribute: str, path: str | Path | None = None):
    """The lora-layers sweep: mixed minus understanding-only held-out choice per preset (which LLM layers adapt)."""
    d = table[(table["mixture"] == "difference") & (table["metric"] == "held_out_choice")]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for variant, g in d.groupby("variant"):
        g = g.iloc[sorted(range(len(g)), key=lambda i: _preset_order(g["preset"].iloc[i]))]
        x = np.arange(len(g))
        ax.errorbar(x, g["mean"], yerr=[g["mean"] - g["lo"], g["hi"] - g["mean"]], marker="o", capsize=4, label=variant)
        ax.set_xticks(x)
        ax.set_xticklabels([p.replace("lora-layers:", "LoRA in blocks ") for p in g["preset"]], fontsize=8)
    ax.axhline(0, color="red", ls=":", lw=1, label="no transfer")
    ax.set_xlabel("which part of the model trains (adapters always)")
    ax.set_ylabel("mixed - und-only, held-out choice")
    ax.legend(fontsize=7)
    ax.set_title(f"Which LLM layers must adapt for generation-learned {attribute} to reach understanding?", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_cross_model(summary: pd.DataFrame, attribute: str, path: str | Path | None = None):
    """Recipient accuracy on held-out values with the donor's activations copied in at each layer."""
    pairs = summary[["donor", "recipient"]].drop_duplicates().to_numpy().tolist()
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4), squeeze=False)
    for ax, (donor, recipient) in zip(axes[0], pairs, strict=True):
        d = summary[(summary["donor"] == donor) & (summary["recipient"] == recipient)]
        patched = d[d["condition"] == "patched"]
        for group, g in patched.groupby("group"):
            g = g.sort_values("layer")
            label = (
                "donor's weights of this block only (LoRA update; adapter: input path)"
                if group == "weights"
                else f"donor activations at {group} positions"
            )
            line = ax.plot(g["layer"], g["accuracy"], marker="s" if group == "weights" else "o", label=label)[0]
            ax.fill_between(g["layer"], g["lo"], g["hi"], color=line.get_color(), alpha=0.2)
        for condition, style, label in (
            ("donor", "--", "donor alone"),
            ("recipient", "-.", "recipient alone"),
            ("all_lora", (0, (1, 1)), "recipient with all the donor's LoRA updates"),
        ):
            row = d[d["condition"] == condition]
            if len(row):
                ax.axhline(row["accuracy"].iloc[0], color="black", ls=style, lw=1, label=label)
        ax.axhline(d["chance"].iloc[0], color="red", ls=":", lw=1, label="chance")
        _layer_axis(ax, patched["layer"].to_numpy())
        ax.set_ylim(0, 1)
        ax.set_ylabel("held-out value accuracy (choice)")
        ax.set_title(f"{donor}\n-> {recipient}", fontsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(f"At which layer does the {attribute} knowledge the donor has (and the recipient lacks) live?")
    fig.tight_layout()
    return _save(fig, path)


def plot_attribution_check(per_example: pd.DataFrame, path: str | Path | None = None):
    """Attribution patching's estimate against true denoising, per (model, attribute, cell): mean over pairs."""
    d = per_example.dropna(subset=["estimated_change"])
    d = d.assign(true_change=d["patched"] - d["corrupt"])
    cells = d.groupby(["model", "attribute", "site", "group"])[["estimated_change", "true_change"]].mean()
    cells = cells.reset_index()
    fig, ax = plt.subplots(figsize=(5, 5))
    for (model, attribute), g in cells.groupby(["model", "attribute"]):
        r = np.corrcoef(g["estimated_change"], g["true_change"])[0, 1] if len(g) > 2 else np.nan
        ax.scatter(g["true_change"], g["estimated_change"], s=12, alpha=0.7, label=f"{model} / {attribute} (r={r:.2f})")
    lim = np.nanmax(np.abs(cells[["estimated_change", "true_change"]].to_numpy())) if len(cells) else 1.0
    ax.plot([-lim, lim], [-lim, lim], color="gray", ls=":", lw=1, label="estimate = truth")
    ax.set_xlabel("true patching: change in logit difference")
    ax.set_ylabel("attribution patching estimate")
    ax.set_title("Can the gradient estimate stand in for true patching?")
    ax.legend(fontsize=6)
    return _save(fig, path)


def plot_ig_overlay(images: np.ndarray, attributions: np.ndarray, path: str | Path | None = None, title: str = ""):
    """Per-image-token attributions on the token grid, upsampled over the watch image (red: toward the answer)."""
    n, t = attributions.shape
    side = round(t**0.5)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.6), squeeze=False)
    for ax, img, a in zip(axes[0], images, attributions, strict=True):
        ax.imshow(img)
        if side * side == t:
            grid = a.reshape(side, side)
            lim = np.abs(grid).max() or 1.0
            h, w = img.shape[:2]
            ax.imshow(
                grid, cmap="coolwarm", vmin=-lim, vmax=lim, alpha=0.55, extent=(0, w, h, 0), interpolation="nearest"
            )
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_patching_heatmap(summary: pd.DataFrame, attribute: str, mode: str, path: str | Path | None = None):
    """Layer x position-group grid of the normalised patching effect per model and site kind (0 = no effect)."""
    from matplotlib.colors import TwoSlopeNorm

    d = summary[(summary["attribute"] == attribute) & (summary["mode"] == mode)]
    panels = [(m, k) for m in sorted(d["model"].unique()) for k in sorted(set(d["site_kind"]) - {"adapter"})]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4 * max(1, len(panels)), 2.8), squeeze=False)
    for ax, (model, kind) in zip(axes[0], panels, strict=False):
        md = d[(d["model"] == model) & d["site_kind"].isin([kind, "adapter"])]
        grid = md.pivot_table(index="group", columns="layer", values="effect")
        noise = not md["separates"].all()  # no clean-corrupt gap: the ratios are noise, so none are drawn
        values = np.full(grid.shape, np.nan) if noise else grid.to_numpy()
        image = ax.imshow(values, cmap="RdBu_r", norm=TwoSlopeNorm(0, -1, 1), aspect="auto")
        ax.set_yticks(range(len(grid.index)), grid.index)
        ax.set_xticks(range(len(grid.columns)), ["adapter" if c == -1 else str(c) for c in grid.columns])
        ax.set_xlabel("layer")
        base = md[["clean_minus_corrupt"]].mean().iloc[0]
        note = " (no gap: not drawn)" if noise else ""
        ax.set_title(f"{model}: {kind}\nclean - corrupt logit diff {base:.2f}{note}", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.04)
    fig.suptitle(f"Where does patching {'restore' if mode == 'denoise' else 'destroy'} the '{attribute}' answer?")
    fig.tight_layout()
    return _save(fig, path)


def plot_mixing_curves(table: pd.DataFrame, path: str | Path | None = None):
    """Per variant: understanding and generation scores against the fraction of training seen, per arm."""
    groups = table.groupby(["variant", "input_distortion", "output_distortion", "preset"], sort=True)
    fig, axes = plt.subplots(1, max(1, groups.ngroups), figsize=(4.5 * max(1, groups.ngroups), 3.8), squeeze=False)
    colors = {"mixed": "tab:orange", "und-only": "tab:blue", "gen-only": "tab:green"}
    for ax, ((variant, d_in, d_out, preset), d) in zip(axes[0], groups, strict=False):
        for (task, mixture), g in d.groupby(["task", "mixture"]):
            g = g.sort_values("fraction")
            style = "-" if task == "understanding" else "--"
            ax.plot(g["fraction"], g["mean"], style, marker="o", color=colors.get(mixture), label=f"{task}, {mixture}")
            ax.fill_between(g["fraction"], g["lo"], g["hi"], color=colors.get(mixture), alpha=0.15)
        for task, g in d.groupby("task"):
            ax.axhline(g["chance"].mean(), color="gray", ls=":", lw=1, label=f"chance, {task}")
        distortion = "" if d_in == d_out == 0 else f", distortion {d_in:g}/{d_out:g}"
        ax.set_title(f"{variant} ({preset}{distortion})", fontsize=9)
        ax.set_xlabel("fraction of training seen")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6)
    fig.suptitle(
        "Does mixed training help both tasks, and does the gain grow with data?\n"
        "(understanding: multiple choice per question; generation: attributes read back from the image)",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_mixing_distortion(gain: pd.DataFrame, path: str | Path | None = None):
    """The mixed-training gain at the last fraction against the strength of the affine distortion, one line per
    distorted space (the undistorted runs are every line's point at 0)."""
    last = gain[gain["fraction"] == gain.groupby(["variant", "preset"])["fraction"].transform("max")]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for where, other in (("input", "output"), ("output", "input")):
        series = last[last[f"{other}_distortion"] == 0]
        for (variant, task), g in series.groupby(["variant", "task"]):
            g = g.sort_values(f"{where}_distortion")
            if g[f"{where}_distortion"].nunique() < 2:
                continue
            ax.errorbar(
                g[f"{where}_distortion"],
                g["gain"],
                yerr=[g["gain"] - g["lo"], g["hi"] - g["gain"]],
                marker="o",
                capsize=3,
                ls="-" if task == "understanding" else "--",
                label=f"{variant}, {task}, {where} space distorted",
            )
    ax.axhline(0, color="red", ls=":", lw=1, label="no gain")
    ax.set_xlabel("affine distortion strength")
    ax.set_ylabel("mixed - single-task")
    ax.legend(fontsize=6)
    ax.set_title("Does the mixed-training gain need aligned input and output spaces?")
    fig.tight_layout()
    return _save(fig, path)


def plot_layer_attributions(summary: pd.DataFrame, attribute: str, path: str | Path | None = None):
    """Share of the answer's logit difference attributed to each position group, per block, one panel per model."""
    d = summary[summary["attribute"] == attribute]
    models = sorted(d["model"].unique())
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(4.2 * max(1, len(models)), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models, strict=False):
        md = d[d["model"] == model]
        _group_lines(ax, md, "share")
        ax.set_xlabel("LLM block (attributed at its output)")
        total = md["mean_total"].iloc[0] if len(md) else float("nan")
        note = "" if md["reads_image"].all() else "\n(the answer barely depends on the image: noise)"
        ax.set_title(f"{model}, f(x) - f(mean image) = {total:.2f}{note}", fontsize=8)
        ax.set_ylabel("share of the logit difference")
        ax.legend(fontsize=7, title="positions", title_fontsize=7)
    fig.suptitle(f"At which positions, block by block, does the evidence for '{attribute}' sit? (layer IG)")
    fig.tight_layout()
    return _save(fig, path)


POOL_LABELS = {
    "tokens": "all tokens",
    "mean": "tokens averaged",
    "weather_region": "weather icon's tokens averaged",
    "battery_region": "battery's tokens averaged",
}


def plot_encoder_probes(df: pd.DataFrame, path: str | Path | None = None):
    """Test score per attribute, one bar per encoder x pooling with its CI; the majority baseline marked."""
    attributes = list(dict.fromkeys(df["attribute"]))
    groups = list(dict.fromkeys(zip(df["encoder"], df["pool"], strict=True)))
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(attributes))
    for i, (encoder, pool) in enumerate(groups):
        g = df[(df["encoder"] == encoder) & (df["pool"] == pool)].set_index("attribute").reindex(attributes)
        err = np.vstack([g["score"] - g["low"], g["high"] - g["score"]]).clip(min=0)
        ax.bar(
            x + (i - (len(groups) - 1) / 2) * width,
            g["score"],
            width,
            yerr=err,
            capsize=2,
            label=f"{encoder}, {POOL_LABELS.get(pool, pool)}",
        )
    majority = df.groupby("attribute")["majority"].first().reindex(attributes)
    ax.scatter(x, majority, marker="_", s=600, color="k", zorder=3, label="majority baseline (R² 0)")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{a}\n({df[df.attribute == a].metric.iloc[0]})" for a in attributes])
    ax.set_ylim(max(-0.5, min(0.0, float(df["low"].min()))), 1.05)  # an R² far below 0 says no signal
    ax.set_ylabel("test score (accuracy or R²)")
    ax.set_title("Do the input spaces carry what the questions ask? (linear probes, held-out images)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: bars reach both corners
    return _save(fig, path)


def eval_baselines(summary: pd.DataFrame) -> pd.DataFrame:
    """Per scored attribute, what a model that ignores its input would score, from the summary's per-value rows:
    for multiple choice a guess among the values the test questions use (1 / values), for generation a generator
    that always draws the commonest prompted value (that value's share of the prompts)."""
    rows = []
    choice_tasks = ("vqa_choice", "generation_choice")
    per_value = summary[(summary["value"] != "all") & summary["task"].isin([*choice_tasks, "generation"])]
    per_value = per_value[per_value["metric"].isin(["choice", "correct"])]
    for (task, attribute, step), d in per_value.groupby(["task", "attribute", "step"]):
        baseline = 1 / d["value"].nunique() if task in choice_tasks else d["n"].max() / d["n"].sum()
        rows.append({"task": task, "attribute": attribute, "step": step, "baseline": baseline})
    if not rows:
        return pd.DataFrame(columns=["task", "attribute", "baseline"])
    return pd.DataFrame(rows).groupby(["task", "attribute"], as_index=False)["baseline"].mean()


# one colour per attribute in every panel, so an attribute is followed across understanding and generation
EVAL_COLORS = {
    "weather": "C1",
    "weather_pos": "C2",
    "battery_pos": "C0",
    "hour": "C3",
    "battery_decile": "C4",
    "minute5": "C5",
}


def plot_eval_curves(summary: pd.DataFrame, path: str | Path | None = None, title: str | None = None):
    """Scores over training from `unilens eval`'s summary.csv: understanding by multiple choice over every VQA turn,
    generation read back per prompted attribute with its ceiling (the tokenizer's rendering of the truth, read by
    the same reader), and generation by multiple choice over the prompt. Dashed: the input-blind baseline of
    `eval_baselines`."""
    whole = summary[summary["value"] == "all"]
    coarse = ("weather", "weather_pos", "battery_pos")
    panels = (
        ("vqa_choice", "choice", coarse, "understanding: multiple choice, every VQA turn"),
        ("generation", "correct", coarse, "generation: prompted weather and corners read back"),
        ("generation", "correct", ("battery_decile", "hour", "minute5"), "generation: prompted battery and time"),
        ("generation_choice", "choice", (*coarse, "hour"), "generation: multiple choice on the prompt (true image)"),
    )
    baselines = eval_baselines(summary)
    fig, axes = plt.subplots(1, len(panels), figsize=(21, 4.2), sharey=True)
    for ax, (task, metric, attributes, label) in zip(axes, panels, strict=True):
        d = whole[(whole["task"] == task) & (whole["metric"] == metric) & whole["attribute"].isin(attributes)]
        ceilings = whole[(whole["task"] == task) & (whole["metric"] == "ceiling")]
        if d.empty:
            ax.text(0.5, 0.5, "not scored", ha="center", transform=ax.transAxes)
        for attribute, ad in d.groupby("attribute"):
            ad = ad.sort_values("step")
            line = ax.plot(ad["step"], ad["mean"], marker="o", label=attribute, color=EVAL_COLORS.get(attribute))[0]
            ax.fill_between(ad["step"], ad["lo"], ad["hi"], color=line.get_color(), alpha=0.2)
            ceiling = ceilings[ceilings["attribute"] == attribute]
            if len(ceiling):
                ax.axhline(ceiling["mean"].mean(), color=line.get_color(), ls=":", lw=1)
            base = baselines[(baselines["task"] == task) & (baselines["attribute"] == attribute)]
            if len(base):
                ax.axhline(base["baseline"].iloc[0], color=line.get_color(), ls="--", lw=1)
        ax.set_xlabel("optimizer step")
        ax.set_title(label, fontsize=10)
        ax.set_ylim(0, 1.02)
        if len(d):
            ax.legend(fontsize=7, title="solid: model; --: input-blind; :: ceiling", title_fontsize=7)
    axes[0].set_ylabel("accuracy (95% CI over test images)")
    fig.suptitle(title or "Does the model read its image and draw what it is asked, over training?")
    fig.tight_layout()
    return _save(fig, path)


def plot_comparison(table: pd.DataFrame, label_a: str, label_b: str, path: str | Path | None = None):
    """`unilens compare`'s differences, A - B per measure with its CI (images and runs resampled), zero drawn; the
    image gaps (nats) and the scores (accuracy) in separate panels, since their units differ. Soft (partial-credit)
    scores stay in the CSV only, to keep one score per question type in the figure."""
    diff = table[(table["arm"] == "A - B") & (table["metric"] != "soft")].assign(
        name=lambda d: d["task"] + " " + d["attribute"] + " " + d["metric"]
    )
    panels = [
        ("image gap, A - B (nats)", diff[diff["metric"] == "gap"]),
        ("score, A - B", diff[diff["metric"] != "gap"]),
    ]
    panels = [(label, d) for label, d in panels if len(d)]
    heights = [max(1.5, 0.28 * len(d)) for _, d in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, sum(heights) + 1.2), height_ratios=heights, squeeze=False)
    for ax, (label, d) in zip(axes[:, 0], panels, strict=True):
        y = np.arange(len(d))[::-1]
        ax.errorbar(d["mean"], y, xerr=[d["mean"] - d["lo"], d["hi"] - d["mean"]], fmt="o", color="C0", capsize=2)
        ax.axvline(0, color="red", ls=":", lw=1, label="no difference")
        ax.set_yticks(y)
        ax.set_yticklabels(d["name"], fontsize=7)
        ax.set_xlabel(label)
        ax.legend(fontsize=7, loc="lower right")
    runs = table[table["arm"].isin(["A", "B"])].groupby("arm")["runs"].first()
    count = {arm: f"{runs.get(arm, 0)} run{'' if runs.get(arm, 0) == 1 else 's'}" for arm in ("A", "B")}
    fig.suptitle(
        f"Does {label_a} ({count['A']}) differ from {label_b} ({count['B']})?\n"
        "95% CI resampling test images and, within each arm, its runs",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_answer_attention(summary: pd.DataFrame, path: str | Path | None = None, title: str | None = None):
    """Per model (columns), per head (lines, CI bands over images) by block: top, the part of the head's attention
    to the image that lands on the item (an even spread's share drawn); bottom, the attention mass from the
    answer's position to the item's tokens."""
    models = list(dict.fromkeys(summary["model"])) if "model" in summary else [None]
    fig, axes = plt.subplots(2, len(models), figsize=(4.5 * len(models), 6), squeeze=False, sharex=True, sharey="row")
    for col, model in enumerate(models):
        d = summary if model is None else summary[summary["model"] == model]
        top, bottom = axes[0, col], axes[1, col]
        for head, h in d.groupby("head"):
            h = h.sort_values("layer")
            line = top.plot(h["layer"], h["image_share"], marker="o", ms=3, label=f"head {head}")[0]
            top.fill_between(h["layer"], h["image_share_lo"], h["image_share_hi"], color=line.get_color(), alpha=0.15)
            bottom.plot(h["layer"], h["to_region"], marker="o", ms=3, color=line.get_color())
            bottom.fill_between(h["layer"], h["to_region_lo"], h["to_region_hi"], color=line.get_color(), alpha=0.15)
        top.axhline(d["even_share"].mean(), color="black", ls="--", lw=1, label="even spread over the image")
        top.set_ylim(0, 1)
        top.set_title(str(model) if model is not None else "")
        bottom.set_xlabel("LLM block")
        bottom.set_xticks(sorted(set(d["layer"])))
        if col == 0:
            top.set_ylabel("share of the head's image\nattention on the item")
            bottom.set_ylabel("attention mass from the answer\nto the item's tokens")
            top.legend(fontsize=7)
    question, region = summary["question"].iloc[0], summary["region"].iloc[0]
    fig.suptitle(title or f"Does the answer to '{question}' look at the {region.split('_')[0]}'s image tokens?")
    fig.tight_layout()
    return _save(fig, path)
