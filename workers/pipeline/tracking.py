"""The track stage: turn per-frame detections into layers that keep one identity for the shot.

Three strategies share this stage so they can be compared on one shot:
- ``farm``: SAM2 tracking refreshed every ``refresh_every`` frames, a forward then a backward
  pass (in windows of ``window_frames``, or one sweep per direction:
  ``workers.pipeline.track_passes``), identities decided by :class:`IdentityBook`;
- ``keyframe-greedy``: Grounded-SAM-2's continuous-ID demo (keyframes only, first match at IoU
  > ``keyframe_iou``, tracks not re-detected are dropped, forward only);
- ``per-frame``: no tracking; each frame's masks linked to layers by IoU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from schemas import DetectMode, LayerInfo, PipelineOptions, StageName, Strategy, TrackingMode
from workers.core.duplicate_ends import LayerFrame, duplicate_end_frames
from workers.core.ghosts import FrameLook, GhostOptions, ghost_frames
from workers.core.identity import IdentityBook, IdentityOptions, detection_quality
from workers.core.layers import NESTED_SHARE, LayerLinker, LayerNamer, nested_pairs
from workers.core.masks import contained, iou, tolerant_overlap
from workers.core.reentry import LayerSpan, ReentryOptions, plan_joins, touched_edge
from workers.core.windows import keyframe_windows, plan_windows, short_gaps, sweep_starts
from workers.models.interfaces import Describer
from workers.pipeline.appearance import end_descriptors, end_features
from workers.pipeline.scratch import LayerStore, TrackedMask, logits_of, quantize_logits
from workers.pipeline.stages import Shot, StageClock, detection_positions
from workers.pipeline.track_passes import sweep_passes, window_passes


@dataclass
class LayerStats:
    present: dict[int, int]
    detected: dict[int, int]
    first: dict[int, int]
    last: dict[int, int]
    quality: dict[int, float]


def track_stage(shot: Shot) -> list[LayerInfo]:
    """Fill ``shot.layers`` with every frame's tracked layers; return the layers to write."""
    strategy = shot.options.strategy
    if strategy == Strategy.FARM:
        return _track_farm(shot)
    if strategy == Strategy.KEYFRAME_GREEDY:
        return _track_keyframe_greedy(shot)
    return _link_per_frame(shot)


def identity_options(options: PipelineOptions) -> IdentityOptions:
    return IdentityOptions(
        match_iou=options.match_iou,
        new_layer_max_cover=options.new_layer_max_cover,
        hysteresis=options.hysteresis,
        max_empty_windows=options.max_empty_windows,
        max_unsupported_windows=options.max_unsupported_windows,
        # Detecting only where layers refresh leaves about a fifth of the frames to confirm a layer
        # on: two confirmations there say what three on consecutive frames said.
        min_detected_frames=(
            min(options.min_detected_frames, 2) if options.detect == DetectMode.REFRESH else options.min_detected_frames
        ),
        min_layer_frames=options.min_layer_frames,
    )


def _track_farm(shot: Shot) -> list[LayerInfo]:
    n = len(shot.source)
    book = IdentityBook(identity_options(shot.options))
    if shot.options.tracking == TrackingMode.SWEEP:
        forward, backward = sweep_starts(n, shot.options.refresh_every)
        clock = StageClock(StageName.TRACK, shot.reporter, len(forward) + len(backward), frames=n)
        sweep_passes(shot, book, clock.tick)
    else:
        windows = plan_windows(n, shot.options.window_frames, shot.options.refresh_every)
        clock = StageClock(StageName.TRACK, shot.reporter, len(windows), frames=n)
        window_passes(shot, book, windows, clock.tick)
    _fold_aliases(shot.layers, n, book)
    _merge_nested(shot, book, n)
    if shot.options.max_gap_frames:
        _fill_gaps(shot, book, n)
        _merge_nested(shot, book, n)  # filled frames can make two layers of one object meet
    # after gap filling (which tracks past a layer's ends again and can hold a lost mask still
    # there) and before re-entry (which can join only layers that no longer share a frame)
    _cut_ghost_ends(shot, book, n)
    _cut_duplicate_ends(shot, book, n)
    _merge_nested(shot, book, n)  # with an end cut off, two layers of one object may meet only as one
    if shot.options.reentry:
        _join_reentries(shot, book, n)
    shot.layers.flush()
    stats = layer_stats(shot.layers, n)
    kept = book.finalize(stats.present, stats.detected, stats.first)
    clock.close()
    return [_layer_info(layer.id, layer.name, layer.label, stats, shot) for layer in kept]


def _written_layers(shot: Shot, book: IdentityBook, frames: int) -> list[int]:
    """Layers that will be written (not merged away, confirmed by detections): only they are
    gap-filled and joined, so a ghost is neither grown nor joined into a real layer."""
    stats = layer_stats(shot.layers, frames)
    opts = book.options
    return [
        lid
        for lid, layer in book.layers.items()
        if layer.merged_into is None
        and stats.present.get(lid, 0) >= opts.min_layer_frames
        and stats.detected.get(lid, 0) >= opts.min_detected_frames
    ]


def _merge_nested(shot: Shot, book: IdentityBook, frames: int) -> None:
    """Two layers of one object, the smaller mask lying inside the larger on most frames they share
    (a box cut short by jitter gave a partial mask, tracked beside the whole one; or a twin): the
    younger joins the older (``workers.core.layers.nested_pairs``). Window starts merge duplicates by overlap;
    a part inside a whole never overlaps it enough to be caught there."""
    written = _written_layers(shot, book, frames)
    if len(written) < 2:
        return
    inside: dict[tuple[int, int], int] = {}
    shared: dict[tuple[int, int], int] = {}
    tolerance = book.options.tolerance_px
    for pos in range(frames):
        cache = shot.layers.get(pos)
        here = [lid for lid in written if lid in cache]
        for young in here:
            for old in here:
                if old >= young:
                    continue
                shared[old, young] = shared.get((old, young), 0) + 1
                a, b = cache[young].mask, cache[old].mask
                smaller, larger = (a, b) if a.sum() <= b.sum() else (b, a)  # a twin a little fatter counts too
                if contained(smaller, larger, tolerance) >= NESTED_SHARE:
                    inside[old, young] = inside.get((old, young), 0) + 1
    for old, young in nested_pairs(inside, shared):
        book.join(young, old)
    _fold_aliases(shot.layers, frames, book)


def _fill_gaps(shot: Shot, book: IdentityBook, frames: int) -> None:
    """Track a layer again across a short drop-out (``max_gap_frames``): from its mask before the
    gap forward, then from its mask after the gap backward over what is still missing; and past
    its ends, up to as far, while the tracker still finds it. Every window lost the object there
    (a tracker loses a small or fast object now and then); one more short track usually bridges
    it, and frames where the object really is gone (out of frame, hidden) come back empty."""
    assert shot.models.tracker is not None, "the farm strategy needs a tracker"
    reach = shot.options.max_gap_frames
    present: dict[int, list[int]] = {lid: [] for lid in _written_layers(shot, book, frames)}
    for pos in range(frames):
        for lid in shot.layers.get(pos):
            if lid in present:
                present[lid].append(pos)
    for lid, positions in present.items():
        if not positions:
            continue
        spans: list[tuple[range, bool]] = []
        for first, last in short_gaps(positions, reach):
            spans += [(range(first - 1, last + 1), False), (range(last + 1, first - 2, -1), False)]
        head, tail = positions[0], positions[-1]
        if head > 0:
            spans.append((range(head, max(-1, head - reach - 1), -1), True))
        if tail < frames - 1:
            spans.append((range(tail, min(frames, tail + reach + 1)), True))
        for span, until_lost in spans:
            _track_span(shot, book, lid, span, until_lost)


def _cut_ghost_ends(shot: Shot, book: IdentityBook, frames: int) -> None:
    """Cut the frames at a layer's ends where its mask stood still with no detection behind it
    (``workers.core.ghosts``)."""
    options = GhostOptions(min_frames=shot.options.ghost_still_frames, support_iou=book.options.revive_iou)
    if options.min_frames <= 0:
        return
    detected = set(detection_positions(frames, shot.options))
    looks: dict[int, list[FrameLook]] = {lid: [] for lid in _written_layers(shot, book, frames)}
    previous: dict[int, np.ndarray] = {}
    for pos in range(frames):
        for lid, tracked in shot.layers.get(pos).items():
            if lid in looks:
                mask = tracked.mask
                still = iou(mask, previous[lid]) if lid in previous else 0.0
                looks[lid].append(FrameLook(pos, still, tracked.quality, pos in detected))
                previous[lid] = mask
    _cut_frames(shot, {lid: ghost_frames(layer_looks, options) for lid, layer_looks in looks.items()})


def _cut_frames(shot: Shot, cuts: dict[int, list[int]]) -> None:
    """Remove each layer's listed positions from the layer store, one store write per frame."""
    by_frame: dict[int, list[int]] = {}
    for lid, positions in cuts.items():
        for pos in positions:
            by_frame.setdefault(pos, []).append(lid)
    for pos, lids in by_frame.items():
        cache = shot.layers.get(pos)
        for lid in lids:
            del cache[lid]
        shot.layers.put(pos, cache)


def _cut_duplicate_ends(shot: Shot, book: IdentityBook, frames: int) -> None:
    """Cut the frames at a layer's ends where it only repeats another layer of its label before
    jumping to its own object, or after jumping from it (``workers.core.duplicate_ends``)."""
    written = _written_layers(shot, book, frames)
    looks: dict[int, list[LayerFrame]] = {lid: [] for lid in written}
    previous: dict[int, tuple[int, np.ndarray]] = {}
    tolerance, same = book.options.tolerance_px, book.options.duplicate_iou
    for pos in range(frames):
        cache = shot.layers.get(pos)
        here = {lid: cache[lid].mask for lid in written if lid in cache}
        repeats: dict[int, set[int]] = {lid: set() for lid in here}
        for a in here:
            for b in here:
                same_label = a < b and book.layers[a].label == book.layers[b].label
                if same_label and tolerant_overlap(here[a], here[b], tolerance) >= same:
                    repeats[a].add(b)
                    repeats[b].add(a)
        for lid, mask in here.items():
            before = previous.get(lid)
            still = iou(mask, before[1]) if before is not None and before[0] == pos - 1 else 0.0
            looks[lid].append(LayerFrame(pos, still, frozenset(repeats[lid])))
            previous[lid] = (pos, mask)
    _cut_frames(shot, duplicate_end_frames(looks))


def _track_span(shot: Shot, book: IdentityBook, lid: int, span: range, until_lost: bool) -> None:
    """Track one layer from its mask at ``span[0]`` over the rest of ``span``, filling only frames
    it is missing from; ``until_lost``: stop at the first frame the tracker does not find it."""
    assert shot.models.tracker is not None
    prompt = shot.layers.get(span[0])[lid].mask
    for pos, (_, outputs) in zip(
        span, shot.models.tracker.track(shot.source.window(span), {lid: prompt}), strict=False
    ):
        if pos == span[0]:
            continue
        mask = outputs[lid] > 0
        if not mask.any():
            if until_lost:
                break
            continue
        cache = shot.layers.get(pos)
        if lid in cache:
            continue
        quality = detection_quality(mask, shot.detections.get(pos), book.layers[lid].label)
        cache[lid] = TrackedMask(quantize_logits(outputs[lid]), quality)
        shot.layers.put(pos, cache)


def _join_reentries(shot: Shot, book: IdentityBook, frames: int) -> None:
    """Layers that are an earlier layer's object come back continue it (``workers.core.reentry``)."""
    candidates = _written_layers(shot, book, frames)
    if len(candidates) < 2:
        return
    positions: dict[int, list[int]] = {lid: [] for lid in candidates}
    areas = dict.fromkeys(candidates, 0)
    for pos in range(frames):
        for lid, tracked in shot.layers.get(pos).items():
            if lid in positions:
                positions[lid].append(pos)
                mask = tracked.mask
                if touched_edge(mask) is None:  # cut by the frame edge, an area says nothing of size
                    areas[lid] = max(areas[lid], int(mask.sum()))

    def image(pos: int) -> np.ndarray:
        return shot.source.at(pos).image

    describer = shot.models.describer
    spans = []
    for lid in candidates:

        def mask_at(pos: int, lid: int = lid) -> np.ndarray:
            return shot.layers.get(pos)[lid].mask

        entry, exit_ = end_descriptors(positions[lid], image, mask_at)
        first, last = positions[lid][0], positions[lid][-1]
        edges = touched_edge(mask_at(first)), touched_edge(mask_at(last))
        features: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        if describer is not None:

            def describe(
                pos: int, mask_at: Callable[[int], np.ndarray] = mask_at, d: Describer = describer
            ) -> np.ndarray:
                return d.describe(shot.source.at(pos), mask_at(pos))

            features = end_features(positions[lid], describe)
        label = book.layers[lid].label
        spans.append(LayerSpan(lid, label, first, last, areas[lid], entry, exit_, *edges, *features))
    joins = plan_joins(spans, ReentryOptions(min_similarity=shot.options.reentry_similarity))
    for later, earlier in joins.items():
        book.join(later, earlier)
    _fold_aliases(shot.layers, frames, book)


def _fold_aliases(store: LayerStore, frames: int, book: IdentityBook) -> None:
    """Give merged layers' frames to the layer they joined (the better mask where both exist)."""
    if not book.aliases:
        return
    for pos in range(frames):
        cache = store.get(pos)
        moved = [lid for lid in cache if lid in book.aliases]
        for lid in moved:
            tracked, root = cache.pop(lid), book.root(lid)
            if root not in cache or tracked.quality > cache[root].quality:
                cache[root] = tracked
        if moved:
            store.put(pos, cache)


def _track_keyframe_greedy(shot: Shot) -> list[LayerInfo]:
    assert shot.models.tracker is not None, "keyframe-greedy needs a tracker"
    n = len(shot.source)
    windows = keyframe_windows(n, shot.options.keyframe_step)
    clock = StageClock(StageName.TRACK, shot.reporter, len(windows), frames=n)
    labels: dict[int, str] = {}
    propagated: dict[int, np.ndarray] = {}  # masks carried to the current keyframe
    for window in windows:
        detections = shot.detections.get(window.start)
        if detections:
            prompts: dict[int, np.ndarray] = {}
            for det in detections:
                # First match, not one-to-one: two detections may take one id (the last wins).
                lid = next((k for k, m in propagated.items() if iou(det.mask, m) > shot.options.keyframe_iou), None)
                if lid is None:
                    lid = len(labels) + 1
                    labels[lid] = det.label
                prompts[lid] = det.mask
        else:
            prompts = dict(propagated)
        propagated = {}
        if prompts:
            frames = shot.source.window(window.positions)
            for pos, (_, outputs) in zip(window.positions, shot.models.tracker.track(frames, prompts), strict=False):
                dets = shot.detections.get(pos) if pos % shot.options.keyframe_step == 0 else []
                cache = {
                    lid: TrackedMask(quantize_logits(lg), detection_quality(lg > 0, dets))
                    for lid, lg in outputs.items()
                    if (lg > 0).any()
                }
                shot.layers.put(pos, cache)  # a later window overwrites the shared keyframe
                propagated = {lid: tm.mask for lid, tm in cache.items()}
        clock.tick()
    shot.layers.flush()
    stats = layer_stats(shot.layers, n)
    return _named(labels, stats, shot)


def _link_per_frame(shot: Shot) -> list[LayerInfo]:
    n = len(shot.source)
    clock = StageClock(StageName.TRACK, shot.reporter, n)
    linker = LayerLinker(shot.options.link_iou)
    for pos in range(n):
        detections = shot.detections.get(pos)
        ids = linker.link(pos, detections)
        shot.layers.put(
            pos, {i + 1: TrackedMask(logits_of(det), det.score) for i, det in zip(ids, detections, strict=True)}
        )
        clock.tick()
    shot.layers.flush()
    stats = layer_stats(shot.layers, n)
    return _named({layer.index + 1: layer.label for layer in linker.layers}, stats, shot)


def _named(labels: dict[int, str], stats: LayerStats, shot: Shot) -> list[LayerInfo]:
    namer = LayerNamer()
    present = sorted((lid for lid in labels if stats.present.get(lid)), key=lambda k: (stats.first[k], k))
    return [_layer_info(lid, namer.name(labels[lid]), labels[lid], stats, shot) for lid in present]


def layer_stats(store: LayerStore, frames: int) -> LayerStats:
    stats = LayerStats({}, {}, {}, {}, {})
    for pos in range(frames):
        for lid, tracked in store.get(pos).items():
            stats.present[lid] = stats.present.get(lid, 0) + 1
            stats.detected[lid] = stats.detected.get(lid, 0) + (tracked.quality >= 0.5)
            stats.first.setdefault(lid, pos)
            stats.last[lid] = pos
            stats.quality[lid] = stats.quality.get(lid, 0.0) + tracked.quality
    return stats


def _layer_info(lid: int, name: str, label: str, stats: LayerStats, shot: Shot) -> LayerInfo:
    frames = stats.present[lid]
    return LayerInfo(
        id=lid,
        name=name,
        label=label,
        first_frame=shot.source.number(stats.first[lid]),
        last_frame=shot.source.number(stats.last[lid]),
        frames=frames,
        mean_score=round(stats.quality[lid] / frames, 4),
    )
