"""Overlap of run spans: the check behind every global-limit test."""

from __future__ import annotations


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one instant (an end at t closes before a start at t)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak
