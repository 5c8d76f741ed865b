"""Monthly trend charts for the digest: one small PNG per KPI (spec/notifications.md).

Twelve month slots labelled 1–12 along the bottom; the vertical scale labelled at its
ends on the left, in the KPI's unit. The year-to-date value is a line with dots over a
light fill, coloured by the KPI's status; the target a dashed grey line. The scale is
fixed by rule, not stretched to the data, so that charts of a month and the next compare
and a value near 100 % is shown where it is: a percentage runs from a round floor (0, 50,
80, 90, 95, 99 or 99.9, the highest below every value and target) to 100, or from 0 to a
round ceiling for a small lower-is-better rate; a count from 0 to a round number above
the target. The axis titles and every number stay in the HTML around the image (a table
gives each month's value too), so a client that blocks images loses nothing.

The PNG has twice the pixels of its display size (sharp on high-density screens), drawn
at three times that and scaled down for smooth lines. The same input always gives the
same bytes (Pillow's own embedded font, no system fonts).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from PIL import Image, ImageDraw, ImageFont

from bsc_rules.notify.notices import TrendPoint

WIDTH, HEIGHT = 260, 96  # CSS pixels in the mail; the PNG has DENSITY times as many
DENSITY = 2
MONTHS = 12
_SS = 3 * DENSITY  # drawing scale: supersampled 3×, then down to DENSITY×
_LEFT, _RIGHT, _TOP, _BOTTOM = 38, 6, 8, 16  # margins in CSS pixels: labels sit in them
_FLOORS = (99.9, 99.0, 95.0, 90.0, 80.0, 50.0, 0.0)  # round floors of a percentage scale
_CEILINGS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)  # round ceilings of a small rate

RGB = tuple[int, int, int]
BACKGROUND: RGB = (255, 255, 255)
AXIS: RGB = (208, 215, 222)
LABEL: RGB = (87, 96, 106)
TARGET: RGB = (110, 119, 129)
STATUS_COLOURS: dict[str, RGB] = {
    "met": (26, 127, 55),
    "on_track": (26, 127, 55),
    "at_risk": (191, 110, 0),
    "breached": (207, 34, 46),
}
GREY: RGB = (140, 149, 159)


@dataclass(frozen=True, slots=True)
class _Frame:
    """Maps (month, value) to pixel positions in the supersampled image."""

    lo: float
    hi: float
    width: int
    height: int

    def x(self, month: int) -> float:
        slot = (self.width - (_LEFT + _RIGHT) * _SS) / MONTHS
        return _LEFT * _SS + (month - 0.5) * slot

    def y(self, value: float) -> float:
        top, bottom = _TOP * _SS, self.height - _BOTTOM * _SS
        clamped = min(self.hi, max(self.lo, value))
        return top + (self.hi - clamped) / (self.hi - self.lo) * (bottom - top)

    @property
    def floor(self) -> float:
        return float(self.height - _BOTTOM * _SS)

    @property
    def left(self) -> float:
        return float(_LEFT * _SS)


def status_colour(status: str) -> RGB:
    """The line colour for a KPI status: green, amber, red, or grey without a verdict."""
    return STATUS_COLOURS.get(status, GREY)


def _nice_ceiling(value: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``value`` (and at least 1)."""
    if value <= 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def value_range(points: Sequence[TrendPoint], unit: str = "percent") -> tuple[float, float]:
    """The fixed vertical scale for these values and targets (see the module's text)."""
    numbers = [n for p in points for n in (p.value, p.target) if n is not None]
    if not numbers:
        return (0.0, 100.0) if unit == "percent" else (0.0, 1.0)
    lo, hi = min(numbers), max(numbers)
    if unit != "percent" or hi > 100:
        return min(0.0, lo), _nice_ceiling(hi * 1.05)
    if hi <= _CEILINGS[-2]:  # a small rate (lower is better): from 0 to a round ceiling
        return min(0.0, lo), next(c for c in _CEILINGS if c >= hi)
    return next(f for f in _FLOORS if f <= lo and f < 100), 100.0


def _label(value: float, unit: str) -> str:
    text = f"{value:,.1f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    return text + ("%" if unit == "percent" else "")


def trend_png(
    points: Sequence[TrendPoint],
    *,
    status: str,
    unit: str = "percent",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> bytes:
    """A PNG (``DENSITY``× ``width``×``height``) of a KPI's year-to-date values by month
    (1–12) against its target, on a fixed, labelled scale."""
    big = (width * _SS, height * _SS)
    image = Image.new("RGB", big, BACKGROUND)
    draw = ImageDraw.Draw(image)
    lo, hi = value_range(points, unit)
    frame = _Frame(lo, hi, big[0], big[1])
    ordered = sorted((p for p in points if 1 <= p.month <= MONTHS), key=lambda p: p.month)
    _axis(draw, frame)
    _labels(draw, frame, unit)
    _target(draw, frame, ordered)
    _series(draw, frame, ordered, status_colour(status))
    small = image.reduce(_SS // DENSITY)  # a box filter over each 3×3 block: smooth edges
    out = io.BytesIO()
    small.save(out, format="PNG", compress_level=9)
    return out.getvalue()


def _labels(draw: ImageDraw.ImageDraw, frame: _Frame, unit: str) -> None:
    """The scale's ends on the left, the months along the bottom."""
    font = ImageFont.load_default(size=9 * _SS)
    for value in (frame.lo, frame.hi):
        text = _label(value, unit)
        right = frame.left - 3 * _SS
        draw.text((right, frame.y(value)), text, fill=LABEL, font=font, anchor="rm")
    for month in (1, 3, 6, 9, 12):
        draw.text((frame.x(month), frame.floor + 3.5 * _SS), str(month), fill=LABEL, font=font,
                  anchor="mt")  # fmt: skip


def _axis(draw: ImageDraw.ImageDraw, frame: _Frame) -> None:
    """Both axes; the month slots alternate a faint shade; a tick per month."""
    half = (frame.x(2) - frame.x(1)) / 2
    for month in range(1, MONTHS + 1):
        if month % 2 == 0:
            box = (frame.x(month) - half, frame.y(frame.hi), frame.x(month) + half, frame.floor)
            draw.rectangle(box, fill=(246, 248, 250))
        tick = frame.x(month)
        draw.line([(tick, frame.floor), (tick, frame.floor + 2 * _SS)], fill=AXIS, width=_SS)
    top = frame.y(frame.hi)
    draw.line([(frame.left, top), (frame.left, frame.floor)], fill=AXIS, width=_SS)
    draw.line([(frame.left, frame.floor), (frame.width, frame.floor)], fill=AXIS, width=_SS)


def _target(draw: ImageDraw.ImageDraw, frame: _Frame, points: Sequence[TrendPoint]) -> None:
    """The target as a dashed line: straight across when it is the same all year."""
    marks = [(p.month, p.target) for p in points if p.target is not None]
    if not marks:
        return
    if len({t for _, t in marks}) == 1:
        y = frame.y(marks[0][1])
        _dashed(draw, (frame.left, y), (float(frame.width), y))
        return
    for (m1, t1), (m2, t2) in pairwise(marks):
        _dashed(draw, (frame.x(m1), frame.y(t1)), (frame.x(m2), frame.y(t2)))


def _dashed(
    draw: ImageDraw.ImageDraw, start: tuple[float, float], end: tuple[float, float]
) -> None:
    """A dashed segment: 5 px on, 3 px off (at the final size)."""
    (x1, y1), (x2, y2) = start, end
    length = ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5
    if length == 0:
        return
    on, off = 5 * _SS, 3 * _SS  # CSS pixels
    pos = 0.0
    while pos < length:
        stop = min(pos + on, length)
        a, b = pos / length, stop / length
        piece = [(x1 + (x2 - x1) * a, y1 + (y2 - y1) * a), (x1 + (x2 - x1) * b, y1 + (y2 - y1) * b)]
        draw.line(piece, fill=TARGET, width=_SS)
        pos = stop + off


def _runs(points: Sequence[TrendPoint]) -> list[list[tuple[int, float]]]:
    """Consecutive months that have a value; a month without one breaks the line."""
    runs: list[list[tuple[int, float]]] = []
    last = -1
    for p in points:
        if p.value is None:
            continue
        if p.month != last + 1 or not runs:
            runs.append([])
        runs[-1].append((p.month, p.value))
        last = p.month
    return runs


def _series(
    draw: ImageDraw.ImageDraw, frame: _Frame, points: Sequence[TrendPoint], colour: RGB
) -> None:
    """The values: a light fill under a line, a dot per month, a bigger dot for the last."""
    light = tuple(c + (255 - c) * 4 // 5 for c in colour)
    runs = _runs(points)
    for run in runs:
        xy = [(frame.x(m), frame.y(v)) for m, v in run]
        if len(xy) > 1:
            draw.polygon([*xy, (xy[-1][0], frame.floor), (xy[0][0], frame.floor)], fill=light)
            draw.line(xy, fill=colour, width=2 * _SS, joint="curve")
        for x, y in xy:
            r = 2.5 * _SS
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    if runs:
        x, y = frame.x(runs[-1][-1][0]), frame.y(runs[-1][-1][1])
        r = 4 * _SS
        draw.ellipse((x - r, y - r, x + r, y + r), fill=BACKGROUND, outline=colour, width=2 * _SS)
