"""Temporal steadying of mattes: each frame's matte blended with its neighbours' mattes, warped
into it along the optical flow, so edges stop shimmering without lagging behind motion.

Each frame's mask is an independent guess, so an edge a pixel in or out from frame to frame
shimmers (dtSSD). Averaging neighbours in place would drag a moving edge behind the object; warping
them first along the plate's optical flow (DIS, at working resolution) puts them where the object is
on this frame. Where the warp does not match the plate (occlusion, an object entering, flow gone
wrong) the neighbour is not heard at that pixel, so nothing is dragged where the flow cannot
see. A layer is never extended: only frames where it exists are blended, and only from
neighbours where it exists too.

The blend is a per-pixel median of coverage (sigmoid of the logits), at working resolution, before
the export's upsampling and edge refinement. Measured: where mattes are written at inference size
it lifts J (``mattefarm compare``; one frame's boundary error is outvoted, a thin stick most), but
after colour unmixing at plate resolution (whose edges already follow the plate, which does not
shimmer) it adds nothing to the edges (``mattefarm bench-edges``); so by default it runs only
where the edges are not refined (``export_frames.steady_reach``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from workers.core.masks import sigmoid

LOGIT_CLIP = 12.0


def flow_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) from grey frame ``a`` to ``b``: a(y, x) ≈ b(y + fy, x + fx)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)  # type: ignore[attr-defined]  # not in the stubs
    flow: np.ndarray = dis.calc(a, b, None)
    return flow


def warp_back(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` of frame b, resampled onto frame a's pixels along ``flow`` (a → b)."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warped: np.ndarray = cv2.remap(
        image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return warped


def to_logits(coverage: np.ndarray) -> np.ndarray:
    c = np.clip(coverage, 1e-6, 1 - 1e-6)
    logits: np.ndarray = np.clip(np.log(c / (1 - c)), -LOGIT_CLIP, LOGIT_CLIP).astype(np.float32)
    return logits


@dataclass
class TemporalSteadier:
    """Steadies each frame's layers with ``reach`` neighbours on each side.

    ``grey(pos)`` gives the working-resolution grey frame at a position; ``logits(pos)`` the
    layers' logits there (layer name → logits)."""

    grey: Callable[[int], np.ndarray]
    logits: Callable[[int], Mapping[str, np.ndarray]]
    positions: int
    reach: int = 1
    tolerance: float = 12.0
    _flows: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def _flow(self, pos: int, other: int) -> np.ndarray:
        key = (pos, other)
        if key not in self._flows:
            if len(self._flows) > 4 * self.reach + 4:  # only the frames around the current one
                self._flows.pop(next(iter(self._flows)))
            self._flows[key] = flow_between(self.grey(pos), self.grey(other))
        return self._flows[key]

    def steady(self, pos: int, current: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each layer's coverage here replaced by the per-pixel median of it and its warped
        neighbours: a median keeps an edge as sharp as each frame has it (an average would blur
        it where frames disagree) and ignores one frame's outlier. A neighbour whose warp does
        not match the plate at a pixel (error above ``tolerance``) gives this frame's value there."""
        if not current:
            return dict(current)
        here = self.grey(pos).astype(np.float32)
        stacks = {name: [sigmoid(logit)] for name, logit in current.items()}
        for k in range(1, self.reach + 1):
            for other in (pos - k, pos + k):
                theirs = self.logits(other) if 0 <= other < self.positions else {}
                flow = self._flow(pos, other) if any(name in theirs for name in current) else None
                agree = None
                if flow is not None:
                    seen = warp_back(self.grey(other).astype(np.float32), flow)
                    agree = np.abs(here - seen) <= self.tolerance
                for name, stack in stacks.items():
                    if flow is None or agree is None or name not in theirs:
                        stack.append(stack[0])  # no neighbour: this frame speaks for it
                        continue
                    stack.append(np.where(agree, warp_back(sigmoid(theirs[name]), flow), stack[0]))
        return {name: to_logits(np.median(np.stack(stack), axis=0)) for name, stack in stacks.items()}
