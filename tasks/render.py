"""Draw a watch: the paper's geometry at 224 px (face radius 0.4 x size, hands 0.5/0.7/0.9 R, widths 6/4/2 px),
then an antialiased resize to the configured image size."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tasks.world import Watch
from unilens.errors import UnilensError

BASE = 224
RADIUS = 0.4 * BASE
CENTER = BASE / 2
HANDS = {"hour": (0.5, 6), "minute": (0.7, 4), "second": (0.9, 2)}  # length in R, width in px
CORNER_MARGIN = 6
ICON = 30
BATTERY_BOX = (36, 14)  # outlined bar; the "N%" text sits under it


def hand_angles(watch: Watch) -> dict[str, float]:
    """Degrees clockwise from 12 o'clock."""
    return {
        "hour": ((watch.hour % 12) + watch.minute / 60) * 30.0,
        "minute": watch.minute * 6.0,
        "second": watch.second * 6.0,
    }


def corner_origin(corner: str, width: int, height: int) -> tuple[int, int]:
    """Top-left pixel of a width x height box tucked into `corner`, outside the face."""
    x = CORNER_MARGIN if corner.endswith("left") else BASE - CORNER_MARGIN - width
    y = CORNER_MARGIN if corner.startswith("top") else BASE - CORNER_MARGIN - height
    return x, y


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow without FreeType: the bitmap font takes no size
        return ImageFont.load_default()


def _draw_face(img: Image.Image, draw: ImageDraw.ImageDraw, watch: Watch) -> None:
    box = (CENTER - RADIUS, CENTER - RADIUS, CENTER + RADIUS, CENTER + RADIUS)
    draw.ellipse(box, fill=watch.face_color)
    if watch.texture == "solid":
        return
    arr = np.asarray(img).copy()
    inside, mesh = _face_masks()
    base = np.array(watch.face_color, dtype=np.int16)
    if watch.texture == "mesh":
        arr[mesh] = np.where(base > 127, base - 60, base + 60).astype(np.uint8)
    else:  # noise
        rng = np.random.default_rng(watch.texture_seed)
        noise = rng.integers(-40, 41, size=(int(inside.sum()), 1), dtype=np.int16)
        arr[inside] = np.clip(base + noise, 0, 255).astype(np.uint8)
    img.paste(Image.fromarray(arr))


@lru_cache(maxsize=1)
def _face_masks() -> tuple[np.ndarray, np.ndarray]:
    """Pixels inside the face, and the mesh lines among them (16 px grid)."""
    yy, xx = np.mgrid[0:BASE, 0:BASE]
    inside = (xx - CENTER + 0.5) ** 2 + (yy - CENTER + 0.5) ** 2 <= RADIUS**2
    return inside, inside & (((xx % 16) < 2) | ((yy % 16) < 2))


def _draw_hands(draw: ImageDraw.ImageDraw, watch: Watch) -> None:
    for name, angle in hand_angles(watch).items():
        length, width = HANDS[name]
        rad = math.radians(angle)
        end = (CENTER + length * RADIUS * math.sin(rad), CENTER - length * RADIUS * math.cos(rad))
        draw.line([(CENTER, CENTER), end], fill=watch.hand_color, width=width)
    draw.ellipse((CENTER - 4, CENTER - 4, CENTER + 4, CENTER + 4), fill=watch.hand_color)


def _draw_weather(draw: ImageDraw.ImageDraw, weather: str, corner: str) -> None:
    x, y = corner_origin(corner, ICON, ICON)
    if weather == "sunny":
        cx, cy = x + ICON / 2, y + ICON / 2
        for k in range(8):
            a = k * math.pi / 4
            draw.line(
                [(cx + 9 * math.cos(a), cy + 9 * math.sin(a)), (cx + 14 * math.cos(a), cy + 14 * math.sin(a))],
                fill=(255, 140, 0),
                width=2,
            )
        draw.ellipse((cx - 7, cy - 7, cx + 7, cy + 7), fill=(255, 200, 0))
        return
    cloud = (170, 170, 170) if weather == "cloudy" else (90, 90, 110)
    top = y + 4 if weather == "cloudy" else y
    draw.ellipse((x + 2, top + 8, x + 16, top + 20), fill=cloud)
    draw.ellipse((x + 9, top + 2, x + 25, top + 18), fill=cloud)
    draw.ellipse((x + 16, top + 8, x + 29, top + 20), fill=cloud)
    draw.rectangle((x + 8, top + 12, x + 23, top + 20), fill=cloud)
    if weather == "raining":
        for dx in (7, 14, 21):
            draw.line([(x + dx, top + 22), (x + dx - 3, top + 29)], fill=(30, 100, 255), width=2)


def _draw_battery(draw: ImageDraw.ImageDraw, battery: int, corner: str) -> None:
    w, h = BATTERY_BOX
    x, y = corner_origin(corner, w + 3, h + 14)
    draw.rectangle((x, y, x + w, y + h), outline=(0, 0, 0), width=2)
    draw.rectangle((x + w + 1, y + 4, x + w + 3, y + h - 4), fill=(0, 0, 0))
    fill = round((w - 5) * battery / 100)
    if fill > 0:
        draw.rectangle((x + 3, y + 3, x + 2 + fill, y + h - 3), fill=(0, 190, 0))
    draw.text((x + 2, y + h + 1), f"{battery}%", fill=(0, 0, 0), font=_font())


# The attributes drawn in a box of their own, and that box's size in BASE pixels (the battery's "N%" text included).
REGION_SIZES = {"weather": (ICON, ICON), "battery": (BATTERY_BOX[0] + 3, BATTERY_BOX[1] + 14)}
# The prompt attributes that name a drawn region: the item itself and its corner (a corner is drawn by its item).
REGION_OF = {**{item: item for item in REGION_SIZES}, **{f"{item}_pos": item for item in REGION_SIZES}}


def attribute_box(watch: Watch, attribute: str) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), end exclusive, in BASE pixels: where `attribute` (weather or battery) is drawn."""
    if attribute not in REGION_SIZES:
        raise UnilensError(
            f"no drawn region for attribute '{attribute}'; attributes with a region: {sorted(REGION_SIZES)}"
        )
    w, h = REGION_SIZES[attribute]
    x, y = corner_origin(getattr(watch, f"{attribute}_pos"), w, h)
    return x, y, x + w + 1, y + h + 1  # PIL draws both end pixels of a box


def region_slots(watch: Watch, attribute: str, side: int) -> list[int]:
    """Row-major indices of the cells of a side x side token grid over the image that `attribute_box` overlaps:
    the image tokens that draw the attribute."""
    x0, y0, x1, y1 = attribute_box(watch, attribute)
    cell = BASE / side
    cols = range(int(x0 // cell), min(side, math.ceil(x1 / cell)))
    rows = range(int(y0 // cell), min(side, math.ceil(y1 / cell)))
    return [r * side + c for r in rows for c in cols]


def render(watch: Watch, image_size: int = 128) -> Image.Image:
    """One RGB watch image of side `image_size`."""
    img = Image.new("RGB", (BASE, BASE), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    _draw_face(img, draw, watch)
    _draw_hands(draw, watch)
    _draw_weather(draw, watch.weather, watch.weather_pos)
    _draw_battery(draw, watch.battery, watch.battery_pos)
    if image_size != BASE:
        img = img.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return img


def render_array(watch: Watch, image_size: int = 128) -> np.ndarray:
    return np.asarray(render(watch, image_size), dtype=np.uint8)
