"""Scoring answers against the world's truth: the paper's soft score, exact match, captions, bootstrap CIs.

Soft scores (paper-notes section 3): time 1 - (e_h/6 + e_m/30 + e_s/30)/3 with circular errors, battery
1 - |pred - gt|/100, weather and positions 1 if the true string is in the answer; 0 when unparsable.
Exact match asks for one unambiguous parsed value equal to the truth.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tasks.world import WEATHERS, Watch

TIME_RE = re.compile(r"(\d{1,2})\s*:\s*(\d{1,2})\s*:\s*(\d{1,2})")
PERCENT_RE = re.compile(r"(\d{1,3})\s*%")
NUMBER_RE = re.compile(r"\b(\d{1,3})\b")
CORNER_RE = re.compile(r"\b(top|bottom)[\s_-]*(left|right)\b")
ATTRIBUTES = ("weather", "time", "battery", "weather_pos", "battery_pos")


def _corners(text: str) -> list[str]:
    return [f"{a}-{b}" for a, b in CORNER_RE.findall(text.lower())]


def parse_answer(attribute: str, text: str):
    """The single value an answer states, or None when it states none or several different ones."""
    text = text.lower()
    if attribute == "time":
        found = {(int(h), int(m), int(s)) for h, m, s in TIME_RE.findall(text)}
        found = {t for t in found if t[0] <= 24 and t[1] < 60 and t[2] < 60}
        return found.pop() if len(found) == 1 else None
    if attribute == "battery":
        found = {int(x) for x in PERCENT_RE.findall(text)} or {int(x) for x in NUMBER_RE.findall(text)}
        found = {x for x in found if 0 <= x <= 100}
        return found.pop() if len(found) == 1 else None
    if attribute == "weather":
        found = {w for w in WEATHERS if re.search(rf"\b{w}\b", text)}
        if not found and re.search(r"\brain(y|s)?\b", text):
            found = {"raining"}
        return found.pop() if len(found) == 1 else None
    if attribute in ("weather_pos", "battery_pos"):
        found = set(_corners(text))
        return found.pop() if len(found) == 1 else None
    raise KeyError(f"unknown attribute '{attribute}'; known: {ATTRIBUTES}")


def truth_value(watch: Watch, attribute: str):
    if attribute == "time":
        return (watch.hour, watch.minute, watch.second)
    return getattr(watch, attribute)


def _circular(a: int, b: int, period: int) -> int:
    d = abs(a - b) % period
    return min(d, period - d)


def soft_score(attribute: str, text: str, truth) -> float:
    """The paper's per-attribute soft score in [0, 1]."""
    low = text.lower()
    if attribute == "time":
        match = TIME_RE.search(low)
        if not match:
            return 0.0
        h, m, s = (int(x) for x in match.groups())
        if m >= 60 or s >= 60:
            return 0.0
        th, tm, ts = truth
        err = _circular(h % 12, th % 12, 12) / 6 + _circular(m, tm, 60) / 30 + _circular(s, ts, 60) / 30
        return 1.0 - err / 3
    if attribute == "battery":
        value = parse_answer("battery", low)
        if value is None:
            return 0.0
        return max(0.0, 1.0 - abs(value - truth) / 100)
    if attribute == "weather_pos" or attribute == "battery_pos":
        return float(truth in _corners(low))
    return float(re.search(rf"\b{truth}\b", low) is not None)


def hour_match(text: str, truth: tuple[int, int, int]) -> float:
    """1 when a time answer names the true hour on the dial (mod 12), else 0. Why: the soft time score sits at its
    chance level 0.5 until minutes and seconds are read too, so it cannot tell a model that reads the short hand
    (soft 0.67 at most) from one that reads nothing; the hour alone can (chance 1/12)."""
    value = parse_answer("time", text)
    return 0.0 if value is None else float(value[0] % 12 == truth[0] % 12)


def exact_match(attribute: str, text: str, truth) -> float:
    value = parse_answer(attribute, text)
    return 0.0 if value is None else exact_match_value(attribute, value, truth)


def value_label(attribute: str, truth) -> str:
    """The group a truth falls in for per-value breakdowns: hour for time, decile for battery."""
    if attribute == "time":
        return f"{truth[0] % 12:02d}h"
    if attribute == "battery":
        decile = min(truth // 10, 9)
        return f"{decile * 10}-{100 if decile == 9 else decile * 10 + 9}%"
    return str(truth)


def score_vqa(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows with image, attribute, prediction, turn and watch (a Watch or its dict) -> one scored row each."""
    out = []
    for row in rows:
        watch = row["watch"] if isinstance(row["watch"], Watch) else Watch.from_dict(row["watch"])
        truth = truth_value(watch, row["attribute"])
        out.append(
            {
                "image": row["image"],
                "turn": row.get("turn", 0),
                "attribute": row["attribute"],
                "value": value_label(row["attribute"], truth),
                "prediction": row["prediction"],
                "soft": soft_score(row["attribute"], row["prediction"], truth),
                "exact": exact_match(row["attribute"], row["prediction"], truth),
                "hour": hour_match(row["prediction"], truth) if row["attribute"] == "time" else np.nan,
            }
        )
    return pd.DataFrame(out)


CAPTION_PATTERNS = {
    "weather": re.compile(r"\b(sunny|cloudy|raining)\b[^,.]*weather|weather[^,.]*\b(sunny|cloudy|raining)\b"),
    "battery": re.compile(r"battery[^,.]*?(\d{1,3})\s*%"),
    "weather_pos": re.compile(r"weather[^,.]*?\b(top|bottom)[\s-]*(left|right)\b"),
    "battery_pos": re.compile(r"battery[^,.]*?\b(top|bottom)[\s-]*(left|right)\b"),
}


def parse_caption(text: str) -> dict:
    """The attribute values a caption states, clause by clause (a clause is text between commas)."""
    low = text.lower()
    stated: dict = {}
    times = TIME_RE.findall(low)
    if times:
        stated["time"] = tuple(int(x) for x in times[0])
    for clause in re.split(r"[,.]", low):
        for attr, pattern in CAPTION_PATTERNS.items():
            match = pattern.search(clause)
            if match and attr not in stated:
                groups = [g for g in match.groups() if g]
                if attr == "battery":
                    stated[attr] = int(groups[0])
                elif attr == "weather":
                    stated[attr] = groups[0]
                else:
                    stated[attr] = f"{groups[0]}-{groups[1]}"
    return stated


def score_caption(text: str, watch: Watch) -> dict:
    """Precision: correct statements / statements. Recall: correct statements / the five attributes."""
    stated = parse_caption(text)
    correct = {a: exact_match_value(a, v, truth_value(watch, a)) for a, v in stated.items()}
    n_correct = sum(correct.values())
    return {
        "stated": len(stated),
        "correct": n_correct,
        "precision": n_correct / len(stated) if stated else 0.0,
        "recall": n_correct / len(ATTRIBUTES),
        **{f"correct_{a}": correct.get(a, np.nan) for a in ATTRIBUTES},
    }


def exact_match_value(attribute: str, value, truth) -> float:
    if attribute == "time":
        return float(value[0] % 12 == truth[0] % 12 and tuple(value[1:]) == tuple(truth[1:]))
    return float(value == truth)


def bootstrap_ci(
    values: Sequence[float],
    groups: Sequence | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap CI; with `groups` (e.g. image ids) whole groups are resampled together."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, len(values), size=(n_boot, len(values)))
        means = values[idx].mean(axis=1)
    else:
        codes, uniques = pd.factorize(pd.Series(list(groups)))
        sums = np.bincount(codes, weights=values, minlength=len(uniques))
        counts = np.bincount(codes, minlength=len(uniques))
        pick = rng.integers(0, len(uniques), size=(n_boot, len(uniques)))
        means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    alpha = (1 - level) / 2
    return float(values.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarize(
    scored: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = ("soft", "exact"), **boot
) -> pd.DataFrame:
    """One row per group with mean and bootstrap CI (resampling images) of each metric; a metric a group does not
    have (all NaN, e.g. the hour of a weather answer) is left out of that group's row."""
    rows = []
    for key, group in scored.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key, strict=True))
        row["n"] = len(group)
        for m in metrics:
            if m not in group or group[m].isna().all():
                continue
            mean, lo, hi = bootstrap_ci(group[m].to_numpy(), group["image"].to_numpy(), **boot)
            row.update({m: mean, f"{m}_lo": lo, f"{m}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows)
