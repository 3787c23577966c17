"""The attributes of one smartwatch and their seeded sampling, with per-value frequencies as configuration.

A frequency spec maps an attribute to {value: probability}. Categorical attributes use their value names;
numeric ones (hour, minute, second, battery) use single values ("7") or inclusive ranges ("0-49"), each range
spread uniformly over its members.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from unilens.errors import UnilensError

WEATHERS = ("sunny", "cloudy", "raining")
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
TEXTURES = ("solid", "mesh", "noise")

# Value sets of every attribute a frequency spec may name; hour 0 and 12 draw the same face.
ATTRIBUTE_VALUES: dict[str, tuple] = {
    "weather": WEATHERS,
    "weather_pos": CORNERS,
    "battery_pos": CORNERS,
    "hour": tuple(range(13)),
    "minute": tuple(range(60)),
    "second": tuple(range(60)),
    "battery": tuple(range(101)),
}
NUMERIC_ATTRIBUTES = ("hour", "minute", "second", "battery")


@dataclass(frozen=True)
class Watch:
    """Everything the renderer needs for one image; face colour and texture are nuisances no text mentions."""

    hour: int
    minute: int
    second: int
    weather: str
    battery: int
    weather_pos: str
    battery_pos: str
    face_color: tuple[int, int, int]
    texture: str = "solid"
    hand_color: tuple[int, int, int] = (255, 255, 255)
    texture_seed: int = 0

    @property
    def time_str(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["face_color"] = list(self.face_color)
        d["hand_color"] = list(self.hand_color)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Watch:
        d = dict(d)
        d["face_color"] = tuple(d["face_color"])
        d["hand_color"] = tuple(d.get("hand_color", (255, 255, 255)))
        return cls(**d)


def attribute_value(watch: Watch, attribute: str):
    if attribute not in ATTRIBUTE_VALUES:
        raise UnilensError(f"unknown attribute '{attribute}'; known attributes: {sorted(ATTRIBUTE_VALUES)}")
    return getattr(watch, attribute)


def expand_frequencies(attribute: str, spec: dict) -> dict:
    """Validate a {value or range: p} spec and expand it to {value: p} over the attribute's values."""
    if attribute not in ATTRIBUTE_VALUES:
        raise UnilensError(
            f"unknown attribute '{attribute}' in frequencies; known attributes: {sorted(ATTRIBUTE_VALUES)}"
        )
    values = ATTRIBUTE_VALUES[attribute]
    total = sum(float(p) for p in spec.values())
    if any(float(p) < 0 for p in spec.values()) or abs(total - 1.0) > 1e-6:
        raise UnilensError(
            f"frequencies for '{attribute}' must be non-negative and sum to 1, they sum to {total:.6g}: {spec}"
            " (fix the numbers)"
        )
    out: dict = {}
    for key, p in spec.items():
        members = _members(attribute, key)
        for v in members:
            if v in out:
                raise UnilensError(f"frequencies for '{attribute}': value {v} is covered twice (by '{key}')")
            out[v] = float(p) / len(members)
    return {v: out.get(v, 0.0) for v in values}


def _members(attribute: str, key) -> list:
    values = ATTRIBUTE_VALUES[attribute]
    if attribute not in NUMERIC_ATTRIBUTES:
        if key not in values:
            raise UnilensError(f"'{key}' is not a value of '{attribute}'; its values are {list(values)}")
        return [key]
    text = str(key).strip()
    try:
        lo, hi = (int(x) for x in text.split("-")) if "-" in text[1:] else (int(text), int(text))
    except ValueError as exc:
        raise UnilensError(
            f"'{key}' is not a value or range of '{attribute}' (write a number like 7 or a range like 0-49)"
        ) from exc
    if lo > hi or lo < values[0] or hi > values[-1]:
        raise UnilensError(f"range '{key}' of '{attribute}' is outside {values[0]}..{values[-1]}")
    return list(range(lo, hi + 1))


def validate_frequencies(freqs: dict | None) -> dict[str, dict]:
    """Expand every attribute's spec; also check both corners can still be distinct."""
    freqs = freqs or {}
    expanded = {attr: expand_frequencies(attr, spec) for attr, spec in freqs.items()}
    if "weather_pos" in expanded and "battery_pos" in expanded:
        w, b = expanded["weather_pos"], expanded["battery_pos"]
        if not any(w[c] > 0 and any(b[d] > 0 for d in CORNERS if d != c) for c in CORNERS):
            raise UnilensError(
                "weather_pos and battery_pos frequencies leave no pair of distinct corners (they must differ)"
            )
    return expanded


@dataclass
class Nuisance:
    """How faces vary beyond the text-described attributes."""

    textures: dict[str, float] = dataclasses.field(default_factory=lambda: {"solid": 1.0})
    colored_hands: bool = False


def _draw(rng: np.random.Generator, values: tuple, probs: dict | None):
    if probs is None:
        return values[int(rng.integers(len(values)))]
    p = np.array([probs[v] for v in values], dtype=float)
    return values[int(rng.choice(len(values), p=p / p.sum()))]


def sample_watch(
    rng: np.random.Generator, freqs: dict[str, dict] | None = None, nuisance: Nuisance | None = None
) -> Watch:
    """Draw one watch; `freqs` is the output of validate_frequencies (unspecified attributes are uniform)."""
    freqs = freqs or {}
    nuisance = nuisance or Nuisance()
    weather_pos = _draw(rng, CORNERS, freqs.get("weather_pos"))
    battery_probs = dict(freqs.get("battery_pos") or {c: 1.0 for c in CORNERS})
    battery_probs[weather_pos] = 0.0
    if sum(battery_probs.values()) == 0:  # this weather corner leaves no battery corner: draw the weather again
        return sample_watch(rng, freqs, nuisance)
    battery_pos = _draw(rng, CORNERS, battery_probs)
    textures = tuple(nuisance.textures)
    texture = _draw(rng, textures, nuisance.textures) if len(textures) > 1 else textures[0]
    if texture not in TEXTURES:
        raise UnilensError(f"unknown texture '{texture}'; known textures: {list(TEXTURES)}")
    face = tuple(int(x) for x in rng.integers(0, 256, size=3))
    hands = tuple(int(x) for x in rng.integers(0, 256, size=3)) if nuisance.colored_hands else (255, 255, 255)
    return Watch(
        hour=int(_draw(rng, ATTRIBUTE_VALUES["hour"], freqs.get("hour"))),
        minute=int(_draw(rng, ATTRIBUTE_VALUES["minute"], freqs.get("minute"))),
        second=int(_draw(rng, ATTRIBUTE_VALUES["second"], freqs.get("second"))),
        weather=str(_draw(rng, WEATHERS, freqs.get("weather"))),
        battery=int(_draw(rng, ATTRIBUTE_VALUES["battery"], freqs.get("battery"))),
        weather_pos=weather_pos,
        battery_pos=battery_pos,
        face_color=face,
        texture=texture,
        hand_color=hands,
        texture_seed=int(rng.integers(2**31)),
    )
