"""A layer's ghost ends: frames at the start or end of a layer where the tracker had lost its object
and held the last mask still on the background, with no detection of the layer's label behind it.

It happens when an object leaves frame (the forward pass keeps its last sliver at the edge) or
before it enters (the backward pass does the same): the object is gone, the mask stays. SAM2 does
it too, and the synthetic tracker holds a prompt on nothing still. Window starts end such a layer
only after ``max_unsupported_windows`` unsupported starts (about 20 frames), so a ghost tail
shorter than that survived to the output: it costs J on those frames and, worse, when the object
came back the ghost was still there, so re-entry (which joins only layers that never share a
frame) could not continue the old layer and the object got a second one (``car_01`` + ``car_02``).

The rule, applied to each end of a layer. Its tail is the frames after the last one a detection
of its label supported (IoU ≥ ``support_iou``), from the first held-still one on (a mask nearly
the previous frame's, IoU ≥ ``still_iou``); its head, the frames before the first supported one,
up to the last held still (nearly the next frame's). An end is a ghost when it has at least
``min_frames`` frames, the detector ran on at least ``min_detected`` of them (so there was a
chance to see the object), and at least ``min_still_share`` of them are held still. A ghost end
is cut; the frame where the mask froze, and moving frames next to the last supported one, stay.
A lone supported frame at the outer end of a held-still run of at least ``min_frames`` unsupported
frames (the detector having looked at ``min_detected`` of them) does not count as support either:
it is the detection the hold was tracked from (a false box on nothing, held still beside it) or one
box that landed on the hold (a returning object's first box, mostly background, beside the sliver
its layer left at the frame edge), not an object that stayed with the layer. A returning object
gets a layer of its own, which re-entry then joins to the old one.
An object leaving frame undetected moves, so its last frames are kept; what is lost is a real
object standing still, undetected, for ``min_frames`` at a layer's end: rare, and cheaper than a
ghost and a second layer.

Pure logic: the caller gives one ``FrameLook`` per frame the layer is on; nothing here reads masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class GhostOptions:
    min_frames: int = 5  # shortest unsupported end taken for a ghost (0: never)
    still_iou: float = 0.9
    min_still_share: float = 0.5
    support_iou: float = 0.3  # the identity book's revive_iou: what counts as a detection behind it
    min_detected: int = 2  # frames of the end the detector ran on (detect=refresh runs on a fifth)


@dataclass(frozen=True)
class FrameLook:
    pos: int
    still: float  # IoU of this frame's mask with the layer's previous frame's (0 on its first frame)
    quality: float  # IoU with the best detection of the layer's label on this frame (0: none)
    detected: bool  # whether the detector ran on this frame


def ghost_frames(looks: Sequence[FrameLook], options: GhostOptions) -> list[int]:
    """Positions to cut from a layer (``looks`` in frame order), at its head and its tail."""
    supported = [i for i, look in enumerate(looks) if look.quality >= options.support_iou]
    if options.min_frames <= 0 or not supported:
        return []  # never supported: the identity book's confirmation rules decide such a layer
    first, last = supported[0], supported[-1]
    # A lone supported frame at the far side of a long unsupported hold is not the layer's object
    # staying: a false box on nothing, tracked from there and held still beside it, "supports"
    # only the frame it came from (a ball's layer carried such a hold for ten frames, and the ball
    # got a second layer); a returning car's first box landing on the sliver its layer left at
    # the edge kept a 13-frame hold, and the car's own layer could not be joined to it.
    while last > first and _seeds_a_hold(looks, last, -1, options):
        last = max(i for i in supported if i < last)
    while first < last and _seeds_a_hold(looks, first, 1, options):
        first = min(i for i in supported if i > first)
    # frame i is held still when it is nearly frame i-1 (tail) or frame i+1 (head); each end is
    # cut from its first held-still frame outwards, so the frame where the mask froze (the
    # tracker's last estimate of its own) and the moving frames before it stay
    tail_still = [i for i in range(last + 1, len(looks)) if looks[i].still >= options.still_iou]
    head_still = [i for i in range(first) if looks[i + 1].still >= options.still_iou]
    cut: list[int] = []
    if tail_still:
        cut += _if_ghost(looks[tail_still[0] :], len(tail_still), options)
    if head_still:
        cut += _if_ghost(looks[: head_still[-1] + 1], len(head_still), options)
    return sorted(cut)


def _seeds_a_hold(looks: Sequence[FrameLook], i: int, inward: int, options: GhostOptions) -> bool:
    """Whether supported frame ``i`` stands alone at the outer end of a hold: at least
    ``min_frames`` unsupported frames next to it on the layer's inner side (``inward`` -1: before
    it, 1: after it) hold one mask still, ``min_detected`` of them looked at by the detector."""
    held = detected = 0
    j = i
    while 0 <= j + inward < len(looks):
        nxt = looks[j + inward]
        later = looks[max(j, j + inward)]  # frames j and j+inward hold one mask: the later nearly the earlier
        # the lone supported frame's own mask need not be the hold's: a returning object's first
        # box, mostly background, lands beside the sliver its layer left at the frame edge
        if (j != i and later.still < options.still_iou) or nxt.quality >= options.support_iou:
            break
        held, detected, j = held + 1, detected + nxt.detected, j + inward
    return held >= options.min_frames and detected >= options.min_detected


def _if_ghost(run: Sequence[FrameLook], still: int, options: GhostOptions) -> list[int]:
    if len(run) < options.min_frames:
        return []
    if sum(1 for look in run if look.detected) < options.min_detected:
        return []
    if still < options.min_still_share * len(run):
        return []
    return [look.pos for look in run]
