"""Monthly trend charts for the digest: one small PNG per KPI (spec/notifications.md).

The image carries no text: the KPI's name, the numbers and the legend stay in the HTML
around it (a table gives every month's value too), so a mail client that blocks images
loses nothing. Twelve month slots; the year-to-date value as a line with dots over a light
fill, coloured by the KPI's status; the target as a dashed grey line. Drawn at three times
the size and scaled down for smooth lines. The same input always gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from PIL import Image, ImageDraw

from bsc_rules.notify.notices import TrendPoint

WIDTH, HEIGHT = 240, 80
MONTHS = 12
_SS = 3  # supersampling factor
_MARGIN_X, _MARGIN_TOP, _MARGIN_BOTTOM = 8, 8, 10

RGB = tuple[int, int, int]
BACKGROUND: RGB = (255, 255, 255)
AXIS: RGB = (208, 215, 222)
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
        slot = (self.width - 2 * _MARGIN_X * _SS) / MONTHS
        return _MARGIN_X * _SS + (month - 0.5) * slot

    def y(self, value: float) -> float:
        top, bottom = _MARGIN_TOP * _SS, self.height - _MARGIN_BOTTOM * _SS
        return top + (self.hi - value) / (self.hi - self.lo) * (bottom - top)

    @property
    def floor(self) -> float:
        return float(self.height - _MARGIN_BOTTOM * _SS)


def status_colour(status: str) -> RGB:
    """The line colour for a KPI status: green, amber, red, or grey without a verdict."""
    return STATUS_COLOURS.get(status, GREY)


def value_range(points: Sequence[TrendPoint]) -> tuple[float, float]:
    """The vertical range that shows every value and target with a little room around."""
    numbers = [n for p in points for n in (p.value, p.target) if n is not None]
    if not numbers:
        return 0.0, 1.0
    lo, hi = min(numbers), max(numbers)
    if hi == lo:
        half = max(abs(hi) * 0.05, 1.0)
        return lo - half, hi + half
    pad = (hi - lo) * 0.18
    return lo - pad, hi + pad


def trend_png(
    points: Sequence[TrendPoint], *, status: str, width: int = WIDTH, height: int = HEIGHT
) -> bytes:
    """A PNG of a KPI's year-to-date values by month (1–12) against its target."""
    big = (width * _SS, height * _SS)
    image = Image.new("RGB", big, BACKGROUND)
    draw = ImageDraw.Draw(image)
    lo, hi = value_range(points)
    frame = _Frame(lo, hi, big[0], big[1])
    ordered = sorted((p for p in points if 1 <= p.month <= MONTHS), key=lambda p: p.month)
    _axis(draw, frame)
    _target(draw, frame, ordered)
    _series(draw, frame, ordered, status_colour(status))
    small = image.resize((width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _axis(draw: ImageDraw.ImageDraw, frame: _Frame) -> None:
    """A baseline with a tick per month; the month slots alternate a faint shade."""
    for month in range(1, MONTHS + 1):
        if month % 2 == 0:
            half = (frame.x(2) - frame.x(1)) / 2
            box = (frame.x(month) - half, 0, frame.x(month) + half, frame.floor)
            draw.rectangle(box, fill=(246, 248, 250))
        tick = frame.x(month)
        draw.line([(tick, frame.floor), (tick, frame.floor + 3 * _SS)], fill=AXIS, width=_SS)
    draw.line([(0, frame.floor), (frame.width, frame.floor)], fill=AXIS, width=_SS)


def _target(draw: ImageDraw.ImageDraw, frame: _Frame, points: Sequence[TrendPoint]) -> None:
    """The target as a dashed line: straight across when it is the same all year."""
    marks = [(p.month, p.target) for p in points if p.target is not None]
    if not marks:
        return
    if len({t for _, t in marks}) == 1:
        y = frame.y(marks[0][1])
        _dashed(draw, (0.0, y), (float(frame.width), y))
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
    on, off = 5 * _SS, 3 * _SS
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
