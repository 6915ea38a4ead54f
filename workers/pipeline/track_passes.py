"""The farm strategy's two passes (forward, then backward) over a shot, in either tracking mode.

Both modes take the same decisions at the same frames: at every window start the identity book
turns that frame's cached masks and detections into prompts (refresh, carry, new, revived,
dropped). They differ in how a layer gets from one window start to the next:
- ``windows`` (the reference): a fresh SAM2 window of ``window_frames`` from every start, so with
  20/5 each frame is tracked about 4 times per direction and the best mask (by agreement with the
  frame's detections, with hysteresis) is kept;
- ``sweep``: one SAM2 pass per direction that keeps its memory, prompted again at each refresh
  only where the book changed something (a detection refreshed a layer, a layer started or came
  back, the cached mask is not the sweep's own), so each frame is tracked once per direction; a
  layer the sweep lost since the last refresh is tracked again from its latest mask first.
  Both directions refresh on the same frames (``sweep_starts``), so detecting only there
  (``detect`` refresh) costs one detection per ``refresh_every`` frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from workers.core.identity import IdentityBook, detection_quality
from workers.core.reentry import touched_edge
from workers.core.windows import Window, sweep_starts
from workers.pipeline.scratch import LayerStore, TrackedMask, quantize_logits
from workers.pipeline.stages import Shot


def window_passes(shot: Shot, book: IdentityBook, windows: Sequence[Window], tick: Callable[[], None]) -> None:
    forward = True
    for window in windows:
        if forward and not window.forward:
            forward = False
            book.start_pass()
        prompts = _prompts_at(shot, book, window.start, window.forward)
        if prompts:
            _run_window(shot, window.positions, prompts, book)
        tick()


def sweep_passes(shot: Shot, book: IdentityBook, tick: Callable[[], None]) -> None:
    """Refreshes at ``sweep_starts``: the same frames in both directions."""
    assert shot.models.tracker is not None, "the farm strategy needs a tracker"
    n = len(shot.source)
    for forward, refreshes in zip((True, False), sweep_starts(n, shot.options.refresh_every), strict=True):
        starts = set(refreshes)
        if not starts:
            continue
        if not forward:
            book.start_pass()
        step = 1 if forward else -1
        positions = range(n) if forward else range(n - 1, -1, -1)
        sweep = shot.models.tracker.sweep(shot.source.window(positions))
        live: set[int] = set()
        seen: dict[int, int] = {}  # each live layer's latest frame the sweep found it on
        for pos in positions:
            _, outputs = sweep.advance()
            found, own = keep_tracked(shot, book, pos, outputs)
            seen.update(dict.fromkeys(found, pos))
            if pos not in starts:
                continue
            for lid in sorted(live):
                # a ghost (no detection behind it at the last refresh) is not worth a second try
                if seen.get(lid, pos) != pos and book.layers[lid].unsupported_windows == 0:
                    _track_again(shot, book, lid, range(seen[lid], pos + step, step))
            cached = {lid: tm.mask for lid, tm in shot.layers.get(pos).items()}
            prompts = _prompts_at(shot, book, pos, forward, cached)
            sweep.drop(live - prompts.keys())
            # Carried layers whose cached mask is the sweep's own continue from memory; the rest
            # (refreshed by a detection, new, back, or cached from the other pass) are prompted.
            changed = {
                lid: mask
                for lid, mask in prompts.items()
                if lid not in live or lid not in own or mask is not cached.get(lid)
            }
            live = set(prompts)
            keep_tracked(shot, book, pos, sweep.prompt(changed))
            seen.update(dict.fromkeys(changed, pos))
            tick()


def _track_again(shot: Shot, book: IdentityBook, lid: int, span: range) -> None:
    """A layer the sweep lost since the last refresh, tracked once more from its latest mask over
    the frames since, by a fresh window: the second try that overlapping windows gave every frame.
    Without it a lost layer waited for a detection to revive it, and a revival in a crowd can take
    the wrong object (a sweep switched a ball onto its neighbour)."""
    assert shot.models.tracker is not None
    start = shot.layers.get(span[0]).get(lid)
    if start is None or touched_edge(start.mask) is not None:
        return  # last seen at the frame edge: it left, it was not lost (and tracking it again cost 35 %)
    frames = shot.source.window(span)
    for pos, (_, outputs) in zip(span, shot.models.tracker.track(frames, {lid: start.mask}), strict=False):
        if pos != span[0]:
            keep_tracked(shot, book, pos, outputs)


def _prompts_at(
    shot: Shot, book: IdentityBook, start: int, forward: bool, cached: dict[int, np.ndarray] | None = None
) -> dict[int, np.ndarray]:
    if cached is None:
        cached = {lid: tm.mask for lid, tm in shot.layers.get(start).items()}
    lookback = (shot.options.max_empty_windows + 1) * shot.options.refresh_every
    recent = recent_masks(shot.layers, start, -1 if forward else 1, lookback, len(shot.source), cached)
    return book.window_prompts(shot.detections.get(start), cached, recent)


def recent_masks(
    store: LayerStore, start: int, step: int, lookback: int, frames: int, skip: dict[int, np.ndarray]
) -> dict[int, np.ndarray]:
    """Each layer's mask on the nearest already-tracked frame before ``start`` (in pass order)."""
    recent: dict[int, np.ndarray] = {}
    for distance in range(1, lookback + 1):
        pos = start + step * distance
        if not 0 <= pos < frames:
            break
        for lid, tracked in store.get(pos).items():
            if lid not in skip and lid not in recent:
                recent[lid] = tracked.mask
    return recent


def keep_tracked(shot: Shot, book: IdentityBook, pos: int, outputs: dict[int, np.ndarray]) -> tuple[set[int], set[int]]:
    """Store tracked logits at ``pos`` where they beat the cached mask (hysteresis on agreement with
    the frame's detections); returns the layers ``outputs`` found on the frame and those whose
    stored mask is now one of ``outputs``."""
    found: set[int] = set()
    kept: set[int] = set()
    if not outputs:
        return found, kept
    cache = shot.layers.get(pos)
    detections = shot.detections.get(pos)
    for lid, logits in outputs.items():
        mask = logits > 0
        if not mask.any():
            continue  # left frame or hidden: keep what the cache has
        found.add(lid)
        quality = detection_quality(mask, detections, book.layers[lid].label)
        current = cache.get(lid)
        if book.accepts(quality, current.quality if current else None):
            cache[lid] = TrackedMask(quantize_logits(logits), quality)
            kept.add(lid)
    if kept:
        shot.layers.put(pos, cache)
    return found, kept


def _run_window(shot: Shot, positions: range, prompts: dict[int, np.ndarray], book: IdentityBook) -> None:
    assert shot.models.tracker is not None, "the farm strategy needs a tracker"
    frames = shot.source.window(positions)
    for pos, (_, outputs) in zip(positions, shot.models.tracker.track(frames, prompts), strict=False):
        keep_tracked(shot, book, pos, outputs)
