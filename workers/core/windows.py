"""Tracking windows: ``length`` frames long, one starting every ``refresh`` frames, forward then backward.

Indices are positions in the shot's frame list (0-based), not plate frame numbers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    start: int  # where the prompts are placed
    stop: int  # the last position tracked (inclusive); < start when going backward
    forward: bool

    @property
    def positions(self) -> range:
        return range(self.start, self.stop + 1) if self.forward else range(self.start, self.stop - 1, -1)

    def __len__(self) -> int:
        return abs(self.stop - self.start) + 1


def plan_windows(frames: int, length: int, refresh: int, *, backward: bool = True) -> list[Window]:
    """The forward windows, then (optionally) the backward ones; every frame is covered both ways."""
    if frames <= 0:
        return []
    if length < 2 or refresh < 1:
        raise ValueError("a window needs length ≥ 2 and refresh ≥ 1")
    windows = [Window(s, min(s + length - 1, frames - 1), True) for s in range(0, frames, refresh)]
    if backward:
        windows += [Window(s, max(s - length + 1, 0), False) for s in range(frames - 1, -1, -refresh)]
    return windows


def sweep_starts(frames: int, refresh: int) -> tuple[list[int], list[int]]:
    """Where the forward and the backward sweep refresh their layers: the same frames both ways
    (every ``refresh``-th), plus the last frame, where the backward sweep begins. One grid for
    both directions, so detecting only where layers refresh costs one detection per ``refresh``
    frames, not two."""
    if frames <= 0:
        return [], []
    forward = list(range(0, frames, refresh))
    return forward, sorted({*forward, frames - 1}, reverse=True)


def keyframe_windows(frames: int, step: int) -> list[Window]:
    """Grounded-SAM-2's continuous-ID schedule: a window every ``step`` frames, forward only, each
    reaching the next keyframe (inclusive) so detections there are matched to propagated masks."""
    return [Window(s, min(s + step, frames - 1), True) for s in range(0, frames, step)]


def short_gaps(present: list[int], max_gap: int) -> list[tuple[int, int]]:
    """Runs of positions (first, last) a layer is missing from between two positions it is on,
    at most ``max_gap`` long: drop-outs to track again, not exits (an exit has no far side)."""
    gaps = []
    for before, after in itertools.pairwise(present):
        if 1 < after - before <= max_gap + 1:
            gaps.append((before + 1, after - 1))
    return gaps
