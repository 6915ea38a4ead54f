"""The GPU half of a job: detect, segment and track a plate, counting the model calls."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schemas import LayerInfo, PipelineOptions
from workers.io.plate import PlateDecoder
from workers.models.interfaces import ModelSet
from workers.pipeline.frame_store import LayerStore
from workers.pipeline.frames import FrameSource
from workers.pipeline.stages import Shot, StageReporter, detect_stage, segment_stage, window_keep
from workers.pipeline.tracking import track_stage


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
    before = models.counters()
    with FrameSource(decoder, keep=window_keep(options), threads=decode_threads, ahead=decode_ahead) as source:
        shot = Shot.open(source, options, models, reporter, scratch)
        segment_stage(shot, detect_stage(shot, classes))
        layers = track_stage(shot)
    counters = dict(models.counters() - before)
    counters["frames_read"] = source.decoded
    counters["decode_wait_ms"] = round(source.wait_s * 1000)
    return AnalysedShot(layers, shot.layers, counters)
