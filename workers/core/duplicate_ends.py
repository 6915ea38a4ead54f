"""A layer's duplicate ends: frames at the start or end of a layer where it only repeats another
layer of its label, on that layer's object, before it jumps to (or after it jumped from) its own.

It happens when two objects of one label meet: an object that enters from behind another (the
backward pass, tracking it back past its entry, holds it on the object it came out of), or one
that a tracker loses onto a neighbour at the end of its layer. The window starts merge two layers
that overlap there, but a backward pass writes a layer's head onto frames no window start of
its own looks at again. Left in, the object first covered by the wrong layer gets an ID switch
when its own layer takes over (hard noise, never-seen seed 2500, ``synth070-thin/n0``), and
merging the two layers would make a switch of its own where they part.

The rule, for each end of a layer A: its end run is the frames from its first (last) frame on
which A's mask duplicates one other layer B of its label (overlap ≥ ``duplicate_iou``, at the
identity book's tolerance), B present on each. The run is A's duplicate end, cut from A, when:
- right after the run (before it, for a tail) A jumps: its mask overlaps its own on the run's
  frame beside it at less than ``jump_iou``, so A leaves B's object for another one;
- B stays: across the same step B's mask overlaps its own at ``jump_iou`` or more.
Two layers that part smoothly (two objects side by side moving apart) keep their frames: neither
jumps. A layer that duplicates another all its life is left to the merges.

Pure logic: the caller gives per-frame looks; nothing here reads masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EndOptions:
    jump_iou: float = 0.5


@dataclass(frozen=True)
class LayerFrame:
    pos: int
    still: float  # IoU of this frame's mask with the layer's mask on the frame before (0 if absent there)
    duplicates: frozenset[int] = field(default_factory=frozenset)  # layers of its label it repeats here


def duplicate_end_frames(
    layers: Mapping[int, Sequence[LayerFrame]], options: EndOptions = EndOptions()
) -> dict[int, list[int]]:
    """Positions to cut per layer (``layers``: each layer's looks in frame order)."""
    at = {lid: {look.pos: look for look in looks} for lid, looks in layers.items()}
    cuts: dict[int, list[int]] = {}
    for lid, looks in layers.items():
        cut = _end(lid, looks, at, options, head=True) + _end(lid, list(reversed(looks)), at, options, head=False)
        if cut:
            cuts[lid] = sorted(cut)
    return cuts


def _end(
    lid: int,
    looks: Sequence[LayerFrame],
    at: Mapping[int, Mapping[int, LayerFrame]],
    options: EndOptions,
    *,
    head: bool,
) -> list[int]:
    """The duplicate run at one end (``looks`` ordered from that end inwards), or nothing."""
    if not looks or not looks[0].duplicates:
        return []
    for other in sorted(looks[0].duplicates):
        run = 0
        while run < len(looks) and other in looks[run].duplicates:
            run += 1
        if run == len(looks):
            continue  # a duplicate all its life: the merges decide
        inside, beside = looks[run], looks[run - 1]  # A's first frame off B's object, and the last on it
        if abs(inside.pos - beside.pos) != 1:
            continue  # a gap between: no step to judge
        # the step between the two frames, looked at from the later one
        step_pos = inside.pos if head else beside.pos
        own = (inside if head else beside).still
        theirs = at[other].get(step_pos)
        if own < options.jump_iou and theirs is not None and theirs.still >= options.jump_iou:
            return [look.pos for look in looks[:run]]
    return []
