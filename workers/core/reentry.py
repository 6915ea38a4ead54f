"""One layer per object across exits: when a layer starts after another layer of the same label
has ended, decide whether it is that object back (continue the old layer) or a different object
(keep a new layer).

Windows only bridge short absences (``max_empty_windows``); an object that leaves frame for longer,
or is hidden for longer, comes back as a new detection and a new layer (``car_01`` then ``car_02``),
which breaks a compositor's script. Peers keep identities across such gaps with appearance
(re-identification, Cutie's long-term memory, SAMURAI's motion-aware memory; see reference A).
Here, after tracking:

- candidates are pairs (earlier, later) of the same label whose frame spans do not overlap at all
  (two layers on one frame are two objects, whatever they look like);
- their appearance is compared: the earlier layer's last frames against the later one's first
  frames: a colour descriptor per layer end (similarity in 0…1) and, where the models give them,
  the image encoder's features pooled inside the mask (cosine similarity); with features a join
  needs both cues, and candidates are ranked by their mean;
- sizes must be plausible: the larger of the two layers' biggest masks at most ``max_area_ratio``
  times the smaller (masks cut by the frame edge do not count; a layer never seen whole has an
  area of 0, and its size is not judged);
- motion must be plausible: a layer that left through one edge of the frame comes back through
  that edge (it turned round) or away from the edges (it was hidden); entering through another
  edge a few frames later is another object (a decoy of the same label and a similar look);
- a later layer continues the earlier one only when the best candidate is similar enough
  (``min_similarity``) and clearly better than the runner-up (``margin``), so a decoy of the same
  label and a similar look is not joined on a coin toss. Joins chain (an object may leave twice).

Pure logic: descriptors arrive as vectors; nothing here reads frames or models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReentryOptions:
    min_similarity: float = 0.8
    margin: float = 0.05
    max_area_ratio: float = 2.5
    # SAM2 image-embedding cosine for one object seen twice: not calibrated on trained weights
    # here (none can be downloaded on the development machines); see docs/mattes.md
    min_feature_similarity: float = 0.7


@dataclass(frozen=True)
class LayerSpan:
    """A tracked layer as re-entry sees it: label, first and last position, biggest mask area,
    and appearance descriptors of its first and last frames (unit-sum histograms or any vectors
    ``similarity`` accepts)."""

    id: int
    label: str
    first: int
    last: int
    max_area: int
    entry: np.ndarray
    exit: np.ndarray
    entry_edge: str | None = None  # the frame edge its first mask touches ("left", …), if any
    exit_edge: str | None = None  # the frame edge its last mask touches, if any
    entry_features: np.ndarray | None = None  # unit vectors of encoder features, when the models give them
    exit_features: np.ndarray | None = None


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya coefficient of two histograms (1: the same distribution, 0: disjoint)."""
    sa, sb = float(a.sum()), float(b.sum())
    if sa <= 0 or sb <= 0:
        return 0.0
    return float(np.sqrt((a / sa) * (b / sb)).sum())


def plan_joins(spans: list[LayerSpan], options: ReentryOptions) -> dict[int, int]:
    """Later layer id → the earlier layer id it continues (chains resolved to the first layer)."""
    joins: dict[int, int] = {}
    # A chain's end: after a join the earlier layer lives on until the later one's last frame and
    # leaves with the later one's look.
    tail_last = {s.id: s.last for s in spans}
    tail_exit = {s.id: s.exit for s in spans}
    tail_edge = {s.id: s.exit_edge for s in spans}
    tail_features = {s.id: s.exit_features for s in spans}
    max_area = {s.id: s.max_area for s in spans}
    for later in sorted(spans, key=lambda s: (s.first, s.id)):
        scored = []
        for earlier in spans:
            head = earlier.id
            if head == later.id or head in joins or earlier.label != later.label:
                continue
            if tail_last[head] >= later.first:
                continue  # they share a frame (or overlap in time): two objects
            left, came = tail_edge[head], later.entry_edge
            if left is not None and came is not None and left != came:
                continue  # out through one edge, in through another: not the same object back
            small, big = sorted((max_area[head], later.max_area))
            if small > 0 and big > options.max_area_ratio * small:
                continue  # (an area of 0: never seen whole, size unknown)
            colour = similarity(tail_exit[head], later.entry)
            score = colour
            features = tail_features[head], later.entry_features
            if features[0] is not None and features[1] is not None:
                cosine = float(np.dot(features[0], features[1]))
                if cosine < options.min_feature_similarity:
                    continue  # whatever the colours, the encoder sees another object
                score = (colour + cosine) / 2
            scored.append((score, colour, head))
        scored.sort(reverse=True)
        # the colour threshold is the best candidate's; a runner-up under it still counts against
        # the margin (as before features: an unsure pair is not joined)
        if not scored or scored[0][1] < options.min_similarity:
            continue
        if len(scored) > 1 and scored[0][0] - scored[1][0] < options.margin:
            continue  # two earlier layers look alike: no way to tell which came back
        head = scored[0][2]
        joins[later.id] = head
        tail_last[head] = later.last
        tail_exit[head] = later.exit
        tail_edge[head] = later.exit_edge
        tail_features[head] = later.exit_features
        max_area[head] = max(max_area[head], later.max_area)
    return joins


def touched_edge(mask: np.ndarray) -> str | None:
    """The frame edge a mask touches most ("left", "right", "top", "bottom"), or None."""
    counts = {
        "left": int(mask[:, 0].sum()),
        "right": int(mask[:, -1].sum()),
        "top": int(mask[0].sum()),
        "bottom": int(mask[-1].sum()),
    }
    edge = max(counts, key=lambda k: counts[k])
    return edge if counts[edge] else None
