"""The renderer draws what the paper says, measured from pixels."""

import math

import numpy as np
import pytest

from tasks.render import BASE, CENTER, RADIUS, attribute_box, hand_angles, region_slots, render_array
from tasks.world import CORNERS, Watch
from unilens.errors import UnilensError


def watch(**kw) -> Watch:
    base = dict(
        hour=3,
        minute=0,
        second=30,
        weather="sunny",
        battery=60,
        weather_pos="top-left",
        battery_pos="bottom-right",
        face_color=(0, 0, 0),
    )
    base.update(kw)
    return Watch(**base)


def bright_angle(img: np.ndarray, radius: float, exclude: list[float]) -> float:
    """Angle (deg clockwise from 12) of the brightest hand crossing a circle of `radius`, skipping known hands."""
    angles = np.arange(0, 360, 0.25)
    rad = np.radians(angles)
    xs = np.clip(np.round(CENTER + radius * np.sin(rad)).astype(int), 0, BASE - 1)
    ys = np.clip(np.round(CENTER - radius * np.cos(rad)).astype(int), 0, BASE - 1)
    brightness = img[ys, xs].astype(float).mean(axis=1)
    for a in exclude:
        near = np.abs((angles - a + 180) % 360 - 180) < 10
        brightness[near] = 0
    hits = angles[brightness > 128]
    assert hits.size, "no hand found on the circle"
    # circular mean of the hit angles
    return math.degrees(math.atan2(np.sin(np.radians(hits)).mean(), np.cos(np.radians(hits)).mean())) % 360


def angle_error(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


@pytest.mark.parametrize("hms", [(3, 0, 30), (7, 56, 16), (11, 10, 40), (0, 45, 20), (12, 20, 50), (5, 33, 2)])
def test_hand_angles_match_time_from_pixels(hms):
    w = watch(hour=hms[0], minute=hms[1], second=hms[2])
    expected = hand_angles(w)
    img = render_array(w, image_size=BASE)
    second = bright_angle(img, 0.8 * RADIUS, [])
    minute = bright_angle(img, 0.6 * RADIUS, [second])
    hour = bright_angle(img, 0.35 * RADIUS, [second, minute])
    assert angle_error(second, expected["second"]) < 3
    assert angle_error(minute, expected["minute"]) < 3
    assert angle_error(hour, expected["hour"]) < 3


def test_hour_zero_and_twelve_draw_the_same():
    a = render_array(watch(hour=0, minute=17, second=3), BASE)
    b = render_array(watch(hour=12, minute=17, second=3), BASE)
    assert np.array_equal(a, b)


def quadrant(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    assert xs.size > 10, "element not found"
    vert = "top" if ys.mean() < BASE / 2 else "bottom"
    horiz = "left" if xs.mean() < BASE / 2 else "right"
    return f"{vert}-{horiz}"


WEATHER_MASKS = {
    "sunny": lambda im: (im[..., 0] > 200) & (im[..., 1] > 100) & (im[..., 2] < 60),
    "cloudy": lambda im: np.abs(im.astype(int) - 170).max(axis=-1) < 6,
    "raining": lambda im: (im[..., 2] > 200) & (im[..., 0] < 80),
}


@pytest.mark.parametrize("weather", ["sunny", "cloudy", "raining"])
@pytest.mark.parametrize(
    "corners",
    [
        ("top-left", "bottom-right"),
        ("top-right", "bottom-left"),
        ("bottom-left", "top-left"),
        ("bottom-right", "top-right"),
    ],
)
def test_icon_and_battery_sit_in_their_corners(weather, corners):
    w = watch(weather=weather, weather_pos=corners[0], battery_pos=corners[1], battery=80)
    img = render_array(w, BASE)
    assert quadrant(WEATHER_MASKS[weather](img)) == corners[0]
    green = (img[..., 1] > 150) & (img[..., 0] < 60) & (img[..., 2] < 60)
    assert quadrant(green) == corners[1]


def test_battery_fill_grows_with_level():
    def green_pixels(level):
        img = render_array(watch(battery=level), BASE)
        return int(((img[..., 1] > 150) & (img[..., 0] < 60) & (img[..., 2] < 60)).sum())

    counts = [green_pixels(b) for b in (0, 25, 50, 100)]
    assert counts[0] == 0
    assert counts[1] < counts[2] < counts[3]


def test_weather_icons_are_distinguishable():
    imgs = {wx: render_array(watch(weather=wx), BASE) for wx in ("sunny", "cloudy", "raining")}
    for wx, img in imgs.items():
        for other, mask in WEATHER_MASKS.items():
            found = mask(img).sum()
            assert (found > 10) == (other == wx), (wx, other, found)


def test_resize_keeps_size_and_is_antialiased():
    img = render_array(watch(), 128)
    assert img.shape == (128, 128, 3)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # antialiasing gives intermediate colours


def changed_pixels(variants: list[Watch]) -> np.ndarray:
    """(N, 2) row, column of every pixel that differs among the renders of `variants` at BASE size."""
    imgs = np.stack([render_array(v, BASE).astype(int) for v in variants])
    return np.argwhere((imgs != imgs[:1]).any(axis=(0, 3)))


@pytest.mark.parametrize("corner", CORNERS)
def test_regions_hold_every_pixel_their_attribute_changes(corner):
    """The pixels that change with the weather kind alone (or the battery level alone) lie inside that attribute's
    box, and the cells of an 8 x 8 token grid that hold them are among its region's slots: region weighting of the
    image loss covers everything that tells the value."""
    other = CORNERS[(CORNERS.index(corner) + 1) % 4]
    cases = {
        "weather": [watch(weather=w, weather_pos=corner, battery_pos=other) for w in ("sunny", "cloudy", "raining")],
        "battery": [watch(battery=b, battery_pos=corner, weather_pos=other) for b in (0, 7, 58, 100)],
    }
    cell = BASE / 8
    for attribute, variants in cases.items():
        changed = changed_pixels(variants)
        x0, y0, x1, y1 = attribute_box(variants[0], attribute)
        assert len(changed) > 50
        assert (changed[:, 0] >= y0).all() and (changed[:, 0] < y1).all(), attribute
        assert (changed[:, 1] >= x0).all() and (changed[:, 1] < x1).all(), attribute
        cells = {int(r // cell) * 8 + int(c // cell) for r, c in changed}
        slots = region_slots(variants[0], attribute, 8)
        assert cells <= set(slots) and len(slots) == 4, (attribute, cells, slots)


def test_region_slots_by_corner_and_grid():
    assert region_slots(watch(weather_pos="top-left"), "weather", 8) == [0, 1, 8, 9]
    assert region_slots(watch(weather_pos="bottom-right"), "weather", 8) == [54, 55, 62, 63]
    assert region_slots(watch(battery_pos="top-right"), "battery", 8) == [6, 7, 14, 15]
    assert region_slots(watch(weather_pos="bottom-left"), "weather", 4) == [12]
    assert region_slots(watch(weather_pos="top-right"), "weather", 16) == [13, 14, 15, 29, 30, 31, 45, 46, 47]
    with pytest.raises(UnilensError, match=r"no drawn region for attribute 'hour'.*battery.*weather"):
        region_slots(watch(), "hour", 8)
