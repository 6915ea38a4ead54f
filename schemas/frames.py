"""Frame ranges in Nuke's notation: ``1001-1100``, ``1001-1050,1060-1100``, ``-5--1``, ``1001``."""

from __future__ import annotations

import re

_PART = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+))?\s*$")
MAX_FRAMES = 100_000


class FrameRangeError(ValueError):
    """A frame range that can't be read; the message says how to write it."""


def parse_frame_range(text: str) -> list[int]:
    """Sorted, unique frames named by ``text``; reversed or malformed parts are refused."""
    if not text or not text.strip():
        raise FrameRangeError("frame range is empty; write it like 1001-1100")
    frames: set[int] = set()
    for part in text.split(","):
        match = _PART.match(part)
        if not match:
            raise FrameRangeError(
                f"can't read {part.strip()!r} as frames; write ranges like 1001-1100 or 1001-1050,1060-1100"
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise FrameRangeError(f"range {part.strip()!r} is reversed; write the first frame first ({last}-{first})")
        if last - first + 1 + len(frames) > MAX_FRAMES:
            raise FrameRangeError(f"more than {MAX_FRAMES} frames requested; split the shot")
        frames.update(range(first, last + 1))
    return sorted(frames)


def format_frame_range(frames: list[int]) -> str:
    """Compact notation for sorted frames: [1, 2, 3, 7] -> '1-3,7'."""
    if not frames:
        return ""
    parts: list[str] = []
    start = prev = frames[0]
    for frame in frames[1:]:
        if frame != prev + 1:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = frame
        prev = frame
    parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)
