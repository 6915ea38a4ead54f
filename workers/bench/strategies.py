"""Run strategies over synthetic shots in-process (same stages as a farm job, no queue) and score
them: the comparison behind ``mattefarm compare``."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from schemas import DetectMode, PipelineOptions, StageName, Strategy, TrackingMode
from workers.io.plate import PlateDecoder
from workers.io.sequence import SequencePattern
from workers.models.builder import build_synthetic
from workers.models.interfaces import ModelSet
from workers.models.synthetic import SyntheticNoise
from workers.pipeline.driver import AnalysedShot, analyse_shot
from workers.pipeline.export import EdgeRefinement, ExportedLayer, MatteSequence, export_stage
from workers.pipeline.export_frames import export_aids
from workers.synthetic.evaluate import Score, evaluate, shot_labels
from workers.synthetic.shot import synthetic_decoder, write_shot


def detect_for(strategy: Strategy, detect: DetectMode) -> DetectMode:
    """A benchmark's detection mode for ``strategy``: the farm's modes apply to the farm; the other
    strategies link detections per frame, so they detect every frame whatever was asked."""
    return detect if strategy == Strategy.FARM else DetectMode.EVERY


class QuietReporter:
    """Reports nothing; keeps each stage's seconds (a stage run in parts adds up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def started(self, stage: StageName, total: int) -> None:
        pass

    def advanced(self, stage: StageName, done: int) -> None:
        pass

    def finished(self, stage: StageName, seconds: float) -> None:
        self.seconds[stage.value] = self.seconds.get(stage.value, 0.0) + seconds

    def cancel_requested(self) -> bool:
        return False


@dataclass
class RunResult:
    shot: str
    strategy: Strategy
    score: Score
    seconds: float
    counters: dict[str, int]


def run_shot(
    plate_pattern: str, classes: list[str], options: PipelineOptions, models: ModelSet, out_dir: Path
) -> dict[str, int]:
    """The whole pipeline on one shot, writing EXRs into ``out_dir``; returns the model counters
    and each stage's milliseconds (``ms_<stage>``)."""
    plate, decoder = synthetic_decoder(plate_pattern, options.max_side)
    scratch = out_dir / ".work"
    clock = QuietReporter()
    result = analyse_shot(decoder, classes, options, models, clock, scratch)
    export_shot(decoder, result, options, out_dir, reporter=clock)
    shutil.rmtree(scratch, ignore_errors=True)
    stage_ms = {f"ms_{stage}": round(seconds * 1000) for stage, seconds in clock.seconds.items()}
    return result.counters | stage_ms | {"frames_written": len(plate.frames)}


def export_shot(
    decoder: PlateDecoder,
    result: AnalysedShot,
    options: PipelineOptions,
    out_dir: Path,
    wrap_edges: Callable[[EdgeRefinement], EdgeRefinement] = lambda edges: edges,
    reporter: QuietReporter | None = None,
) -> None:
    """An analysed shot's mattes into ``out_dir`` as the job's options export them (edges, steadying);
    ``wrap_edges`` may wrap the refiner (to time it)."""
    plate = decoder.plate
    output = SequencePattern.parse(str(out_dir / f"{out_dir.name}.####.exr"))
    layers = [ExportedLayer(layer.id, layer.name) for layer in result.layers]
    aids = export_aids(options, decoder, plate.frames, result.store, layers)
    export_stage(
        MatteSequence(
            plate.frames,
            plate.geometry,
            output.path_for,
            cryptomatte=False,
            edges=wrap_edges(aids.edges) if aids.edges is not None else None,
            guide_for=aids.frames.guide,
            steadier=aids.steadier,
        ),
        layers,
        result.store,
        reporter or QuietReporter(),
    )


def compare(
    root: Path,
    *,
    shots: int = 8,
    frames: int = 60,
    objects: int = 4,
    strategies: tuple[Strategy, ...] = tuple(Strategy),
    first_seed: int = 100,
    noise_seeds: int = 1,
    noise: SyntheticNoise | None = None,
    scenarios: tuple[str, ...] = ("default",),
    sizes: tuple[tuple[int, int], ...] = ((640, 360),),
    tracking: TrackingMode = TrackingMode.WINDOWS,
    detect: DetectMode = DetectMode.EVERY,
    progress: Callable[[str], None] | None = None,
) -> list[RunResult]:
    """Every strategy on ``shots`` shots (seeds from ``first_seed``; scenario kinds and plate sizes
    taken in turn), each under ``noise_seeds`` draws of the detector/segmenter/tracker noise
    (seeds 0…): one result per shot, noise seed and strategy, named ``synthNN0-SCENARIO/nK``. The
    prompt is the shot's own labels; ``tracking`` and ``detect`` are the farm strategy's modes."""
    with _only_user(root):  # another comparison in the same folder would clear our renders
        results: list[RunResult] = []
        base = noise or SyntheticNoise()
        for index in range(shots):
            scenario, (width, height) = scenarios[index % len(scenarios)], sizes[index % len(sizes)]
            shot = f"synth{index + 1:02d}0-{scenario}"
            plate = write_shot(root / "shots", shot, frames=frames, objects=objects, seed=first_seed + index,
                               scenario=scenario, width=width, height=height)  # fmt: skip
            truth = plate.parent.parent / "truth"
            classes = shot_labels(truth)
            for noise_seed in range(noise_seeds):
                name = f"{shot}/n{noise_seed}"
                for strategy in strategies:
                    out = root / "renders" / strategy.value / shot / f"n{noise_seed}"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir(parents=True)
                    models = build_synthetic(noise=dataclasses.replace(base, seed=noise_seed))
                    started = time.monotonic()
                    options = PipelineOptions(strategy=strategy, tracking=tracking, detect=detect_for(strategy, detect))
                    counters = run_shot(str(plate), classes, options, models, out)
                    score = evaluate(out, truth, classes)
                    results.append(RunResult(name, strategy, score, time.monotonic() - started, counters))
                    if progress:
                        progress(f"{name} {strategy.value}")
    return results


class WorkdirBusy(RuntimeError):
    """Another comparison is writing into the same folder (each clears and writes its renders)."""


@contextlib.contextmanager
def _only_user(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".compare.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusy(f"{root} is in use by another comparison") from None
        yield
