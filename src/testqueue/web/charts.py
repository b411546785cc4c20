"""Small inline SVG charts: the geometry only; the template draws the elements.

Values arrive already bucketed by time; a bucket without runs is None and
leaves a gap in a line rather than a misleading zero. Everything is computed
in the chart's own coordinate box, so the SVG scales with its CSS width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 160
HEIGHT = 40
PAD = 3


@dataclass(frozen=True)
class Mark:
    """One bucket as drawn: its centre x, its top y, and its text for a tooltip."""

    x: float
    y: float
    height: float
    label: str


@dataclass(frozen=True)
class Chart:
    """A line (as SVG polyline segments) or bars over the same buckets."""

    segments: list[str]
    marks: list[Mark]
    bar_width: float
    summary: str
    width: int = WIDTH
    height: int = HEIGHT


def _x(index: int, count: int) -> float:
    slot = (WIDTH - 2 * PAD) / max(count, 1)
    return round(PAD + slot * (index + 0.5), 1)


def _y(value: float, top: float) -> float:
    share = value / top if top > 0 else 0.0
    return round(HEIGHT - PAD - share * (HEIGHT - 2 * PAD), 1)


def line(values: Sequence[float | None], labels: Sequence[str], top: float, summary: str) -> Chart:
    """A line chart from 0 to `top`, broken where a bucket has no value."""
    segments: list[list[str]] = [[]]
    marks: list[Mark] = []
    for index, value in enumerate(values):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        x, y = _x(index, len(values)), _y(value, top)
        segments[-1].append(f"{x},{y}")
        marks.append(Mark(x, y, 0.0, labels[index]))
    return Chart([" ".join(s) for s in segments if len(s) > 1], marks, 0.0, summary)


def bars(values: Sequence[float | None], labels: Sequence[str], summary: str) -> Chart:
    """A bar chart from 0 to the largest value; a bucket without a value has no bar."""
    top = max((v for v in values if v is not None), default=0.0)
    width = round((WIDTH - 2 * PAD) / max(len(values), 1) * 0.7, 1)
    marks = []
    for index, value in enumerate(values):
        if value is None:
            continue
        # A tiny value still gets a visible sliver, so "fast" never reads as "no runs".
        height = max(HEIGHT - PAD - _y(value, top), 1.0)
        left = round(_x(index, len(values)) - width / 2, 1)
        marks.append(Mark(left, round(HEIGHT - PAD - height, 1), round(height, 1), labels[index]))
    return Chart([], marks, width, summary)
