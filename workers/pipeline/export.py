"""The export stage: one matte EXR per plate frame, in the layout Nuke reads with one Read node.

Per frame: ``A`` (half, the union), ``<layer>.A`` (half, every layer on every frame so the
channel set never changes) and ``CryptoObject00..02`` (float32, 6 ranks). Logits are upsampled
to the plate's data window (pixel centres aligned; this also re-squeezes anamorphic plates)
before the sigmoid, so edges stay anti-aliased. With an ``EdgeRefiner`` the upsampled mattes are
then refined in their boundary band, guided by the plate at plate resolution (``edges``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from schemas import StageName
from workers.core.masks import sigmoid
from workers.io import cryptomatte
from workers.io.exr import to_half, write_exr_atomic
from workers.io.images import Geometry
from workers.pipeline.scratch import LayerStore, dequantize_logits
from workers.pipeline.stages import StageClock, StageReporter

# Mattes within this of 0 or 1 are written as exactly 0 or 1: flat areas stay flat (and compress),
# and a layer's far background is not a cloud of 1e-5 coverage in the Cryptomatte ranks.
SNAP = 1.0 / 2048.0


@dataclass(frozen=True)
class ExportedLayer:
    id: int
    name: str


class EdgeRefinement(Protocol):
    """Refines one upsampled matte (H, W) with the frame's plate guide (H, W, 3); ``edges.EdgeRefiner``."""

    def refine(self, matte: np.ndarray, guide: np.ndarray) -> np.ndarray: ...


class Steadier(Protocol):
    """Steadies one frame's working-resolution logits over time; ``temporal.TemporalSteadier``."""

    def steady(self, pos: int, current: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class ReviewSink(Protocol):
    """Receives each exported frame's working-resolution logits (layer name → logits)."""

    def add(self, frame: int, logits: Mapping[str, np.ndarray]) -> None: ...


@dataclass
class MatteSequence:
    """Where and how the mattes of one job are written."""

    frames: list[int]
    geometry: Geometry
    output_for: Callable[[int], Path]
    header: dict[str, Any] = field(default_factory=dict)  # the same on every frame
    frame_header: Callable[[int], dict[str, Any]] = lambda frame: {}
    compression: str = "zip"
    cryptomatte: bool = True
    edges: EdgeRefinement | None = None  # refine edges at plate resolution …
    guide_for: Callable[[int], np.ndarray] | None = None  # … guided by this frame's plate (``plate_guide``)
    steadier: Steadier | None = None  # blend each frame's layers with its flow-warped neighbours


def plate_matte(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Working-resolution logits → soft matte on the plate grid, snapped at 0 and 1."""
    # cv2's bilinear resize samples at pixel centres (half-pixel alignment).
    return snap(sigmoid(cv2.resize(logits, size, interpolation=cv2.INTER_LINEAR)))


def snap(matte: np.ndarray) -> np.ndarray:
    matte[matte < SNAP] = 0.0
    matte[matte > 1.0 - SNAP] = 1.0
    return matte


def matte_channels(
    layer_names: list[str], halves: list[np.ndarray], size: tuple[int, int], cryptomatte_on: bool
) -> dict[str, np.ndarray]:
    """The frame's channels from its per-layer half mattes (zeros for absent layers)."""
    union = np.zeros((size[1], size[0]), np.float16)
    for half in halves:
        np.maximum(union, half, out=union)
    channels: dict[str, np.ndarray] = {"A": union}
    channels.update({f"{name}.A": half for name, half in zip(layer_names, halves, strict=True)})
    if cryptomatte_on:
        # Encoded from the half values, so decoding gives back exactly what the half layers hold.
        stack = np.stack(halves) if halves else np.zeros((0, size[1], size[0]), np.float16)
        channels.update(cryptomatte.encode(stack, layer_names))
    return channels


def frame_logits(store: LayerStore, pos: int, layers: list[ExportedLayer]) -> dict[str, np.ndarray]:
    """Working-resolution logits of the layers present at ``pos``, by layer name."""
    tracked = store.get(pos)
    return {layer.name: dequantize_logits(tracked[layer.id].logits) for layer in layers if layer.id in tracked}


def export_stage(
    target: MatteSequence,
    layers: list[ExportedLayer],
    store: LayerStore,
    reporter: StageReporter,
    review: ReviewSink | None = None,
    *,
    positions: range | None = None,
    keep_existing: Callable[[Path], bool] = lambda path: False,
    wrote: Callable[[int, Path, bool], None] = lambda frame, path, kept: None,
) -> list[Path]:
    """Write the frames at ``positions`` (default: all) atomically; returns their paths in order.

    ``keep_existing(path)`` says a frame on disk is already this job's (a retried task resumes
    there instead of writing it again); ``wrote`` is told about every frame, written or kept.
    """
    positions = positions if positions is not None else range(len(target.frames))
    clock = StageClock(StageName.EXPORT, reporter, len(positions))
    size = (target.geometry.width, target.geometry.height)
    names = [layer.name for layer in layers]
    header = dict(target.header)
    if target.cryptomatte:
        header.update(cryptomatte.header(names))
    written: list[Path] = []
    for pos in positions:
        frame = target.frames[pos]
        path = target.output_for(frame)
        if keep_existing(path):
            wrote(frame, path, True)
            written.append(path)
            clock.tick()
            continue
        logits_by_name = frame_logits(store, pos, layers)
        if target.steadier is not None:
            logits_by_name = target.steadier.steady(pos, logits_by_name)
        mattes = {name: plate_matte(logits, size) for name, logits in logits_by_name.items()}
        if target.edges is not None and target.guide_for is not None and mattes:
            guide = target.guide_for(frame)  # one plate read per frame, for all its layers
            mattes = {name: snap(target.edges.refine(matte, guide)) for name, matte in mattes.items()}
        halves = [
            to_half(mattes[name]) if name in mattes else np.zeros((size[1], size[0]), np.float16) for name in names
        ]
        channels = matte_channels(names, halves, size, target.cryptomatte)
        write_exr_atomic(
            path, channels, header | target.geometry.exr_header() | target.frame_header(frame), target.compression
        )
        wrote(frame, path, False)
        if review is not None:
            review.add(frame, logits_by_name)
        written.append(path)
        clock.tick()
    clock.close()
    return written
