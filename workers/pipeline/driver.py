"""The pipeline driver: the one place the stages run over a shot.

A farm job runs each stage as its own tasks (``workers.runtime.stage_tasks``), and the synthetic
suite runs them back to back (:func:`analyse_shot`); both go through :func:`open_shot` and the
``*_step`` functions here, so they cannot drift apart. Steps hand their results on through the
shot's scratch folder (boxes from detect to segment, masks from segment to track), which is what
lets a farm run them on different workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from schemas import LayerInfo, PipelineOptions
from workers.io.plate import PlateDecoder
from workers.models.interfaces import ModelSet
from workers.pipeline.frames import FrameSource
from workers.pipeline.scratch import LayerStore
from workers.pipeline.stages import (
    Shot,
    StageReporter,
    detect_stage,
    detection_positions,
    frames_to_keep,
    segment_stage,
    window_keep,
)
from workers.pipeline.tracking import track_stage


@dataclass
class ShotRun:
    """An open shot, and once it closes cleanly, the model calls and decodes it cost."""

    shot: Shot
    counters: dict[str, int] = field(default_factory=dict)

    def detected_positions(self, within: Iterable[int] | None = None) -> list[int]:
        """Where the detector runs (every frame, or keyframes), limited to ``within``."""
        every = detection_positions(len(self.shot.source), self.shot.options)
        if within is None:
            return every
        wanted = set(within)
        return [pos for pos in every if pos in wanted]


@contextmanager
def open_shot(
    decoder: PlateDecoder,
    options: PipelineOptions,
    models: ModelSet,
    reporter: StageReporter,
    scratch: Path,
    *,
    decode_threads: int = 2,
    decode_ahead: int = 4,
    frame_cache_mb: int = 1024,
    within: Iterable[int] | None = None,
) -> Iterator[ShotRun]:
    """``within``: the positions the caller will read (a task's chunk); default the whole shot."""
    before = models.counters()
    keep = frames_to_keep(options, len(decoder.plate.frames), decoder.size, frame_cache_mb)
    chunk = list(within) if within is not None else None
    with FrameSource(decoder, keep=keep, threads=decode_threads, ahead=decode_ahead, within=chunk) as source:
        run = ShotRun(Shot.open(source, options, models, reporter, scratch, window_keep(options)))
        yield run
    run.counters = dict(models.counters() - before)
    run.counters["frames_read"] = source.decoded
    run.counters["decode_wait_ms"] = round(source.wait_s * 1000)


def detect_step(run: ShotRun, classes: list[str], positions: list[int]) -> None:
    """Boxes at ``positions``, into the scratch folder for the segment step."""
    for pos, found in detect_stage(run.shot, classes, positions).items():
        run.shot.boxes.put(pos, found)


def segment_step(run: ShotRun, positions: list[int]) -> None:
    """Masks for the boxes the detect step stored at ``positions``."""
    segment_stage(run.shot, {pos: run.shot.boxes.get(pos) for pos in positions})


def track_step(run: ShotRun) -> list[LayerInfo]:
    """Layers over the whole shot, from the segment step's masks. The track task is the shot's
    only writer of layers and rebuilds them all, so a retry starts from none: a killed attempt's
    layer scratch (ids of its own identity book) must not be read back as this attempt's."""
    run.shot.layers.clear()
    return track_stage(run.shot)


@dataclass
class AnalysedShot:
    layers: list[LayerInfo]
    store: LayerStore  # every frame's tracked layers, flushed to the scratch folder
    counters: dict[str, int]


def analyse_shot(
    decoder: PlateDecoder,
    classes: list[str],
    options: PipelineOptions,
    models: ModelSet,
    reporter: StageReporter,
    scratch: Path,
    *,
    decode_threads: int = 2,
    decode_ahead: int = 4,
) -> AnalysedShot:
    """Detect, segment and track a whole shot in this process (the synthetic suite, benchmarks)."""
    with open_shot(
        decoder, options, models, reporter, scratch, decode_threads=decode_threads, decode_ahead=decode_ahead
    ) as run:
        detected = run.detected_positions()
        detect_step(run, classes, detected)
        segment_step(run, detected)
        layers = track_step(run)
    return AnalysedShot(layers, run.shot.layers, run.counters)
