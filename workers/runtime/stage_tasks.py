"""What each kind of task does: detect, segment and track run the pipeline driver's steps over
the task's frames; export writes its frames' mattes; finalise writes the review media and the
manifest and removes the scratch folder. :data:`RUNNERS` maps (stage, kind) to the function.
"""

from __future__ import annotations

import bisect
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from farm_config.settings import Settings
from schemas import JobStatus, ModelsUsed, ReviewLinks, StageName, split_prompt
from schemas.task import TaskKind, TaskStatus
from services.store import JobStore
from workers.io.atomic import TEMP_SUFFIX, remove_partial_writes, write_json_atomic
from workers.io.exr import read_exr_header
from workers.io.plate import PlateDecoder, PlateInfo
from workers.io.review import ReviewWriter
from workers.io.sequence import SequencePattern
from workers.io.version_marker import clear_incomplete
from workers.models.builder import resolve_device
from workers.models.interfaces import ModelSet
from workers.pipeline.driver import detect_step, open_shot, segment_step, track_step
from workers.pipeline.export import ExportedLayer, MatteSequence, export_stage, frame_logits
from workers.pipeline.export_frames import export_aids
from workers.pipeline.scratch import LayerStore
from workers.pipeline.stages import JobCanceled, StageReporter
from workers.provenance import RANDOM_WEIGHTS_WARNING, FrameHeaders, job_manifest, matte_header
from workers.runtime.lighter import lighter_settings


@dataclass
class StageTask:
    """One attempt of one task, with what it reads and where it reports."""

    task: TaskStatus
    job: JobStatus
    plate: PlateInfo
    settings: Settings
    store: JobStore
    reporter: StageReporter
    log: logging.Logger
    models: Callable[[Settings], ModelSet]

    @property
    def positions(self) -> range:
        """The task's frames, as positions in the job's frame list."""
        first = bisect.bisect_left(self.job.frames, self.task.first_frame)
        return range(first, bisect.bisect_right(self.job.frames, self.task.last_frame))

    @property
    def scratch(self) -> Path:
        return scratch_folder(self.job.output_dir)

    def decoder(self) -> PlateDecoder:
        spec = self.job.spec
        return PlateDecoder.configured(self.plate, spec.options.max_side, spec.colourspace, self.settings)


def scratch_folder(output_dir: str) -> Path:
    return Path(output_dir) / ".work"


def _analysis(ctx: StageTask) -> None:
    """Detect, segment or track: the pipeline driver's step over this task's frames."""
    settings, changes = lighter_settings(ctx.settings, ctx.task.lighter, ctx.job.spec.allow_smaller_model)
    if changes:
        ctx.log.warning("out-of-memory retry, lighter settings: %s", "; ".join(changes))
    models = ctx.models(settings)
    _record_models(ctx, models)
    with open_shot(
        ctx.decoder(),
        ctx.job.spec.options,
        models,
        ctx.reporter,
        ctx.scratch,
        decode_threads=ctx.settings.decode_threads,
        decode_ahead=ctx.settings.decode_ahead,
        frame_cache_mb=ctx.settings.frame_cache_mb,
        within=None if ctx.task.stage == StageName.TRACK else ctx.positions,
    ) as run:
        if ctx.task.stage == StageName.DETECT:
            detect_step(run, split_prompt(ctx.job.spec.prompt), run.detected_positions(ctx.positions))
        elif ctx.task.stage == StageName.SEGMENT:
            segment_step(run, run.detected_positions(ctx.positions))
        else:
            layers = track_step(run)
            ctx.store.record_run(ctx.job.id, layers=layers)
            ctx.log.info("%d layer(s): %s", len(layers), ", ".join(layer.name for layer in layers))
    # Decodes by stage too, so "each frame decoded at most once per stage" can be read off a job.
    stage_reads = {f"frames_read_{ctx.task.stage}": run.counters.get("frames_read", 0)}
    ctx.store.add_counters(ctx.job.id, run.counters | stage_reads)


def _record_models(ctx: StageTask, models: ModelSet) -> None:
    used = ModelsUsed(
        backend=models.backend,
        weights=models.weights,
        detector=models.detector.name,
        segmenter=models.segmenter.name,
        device=models.device,
        checkpoints=models.checkpoints,
    )
    warning = RANDOM_WEIGHTS_WARNING if models.weights == "random" else None
    ctx.store.record_run(ctx.job.id, models=used, warning=warning)


def _export(ctx: StageTask) -> None:
    job, plate = ctx.job, ctx.plate
    decoder = ctx.decoder()
    options = job.spec.options
    store = LayerStore(ctx.scratch)
    exported = [ExportedLayer(layer.id, layer.name) for layer in job.layers]
    aids = export_aids(options, decoder, plate.frames, store, exported, resolve_device(ctx.settings.device))
    if aids.edges is not None:
        ctx.log.info("edges refined at plate resolution (guided by the plate, band %d px)", aids.edges.band)
    if aids.steadier is not None:
        ctx.log.info("mattes steadied over %d frame(s) each side along the optical flow", aids.steadier.reach)
    target = MatteSequence(
        frames=plate.frames,
        geometry=plate.geometry,
        output_for=SequencePattern.parse(job.output_pattern).path_for,
        header=matte_header(job, plate, decoder.colour, decoder.size),
        frame_header=FrameHeaders(plate),
        edges=aids.edges,
        guide_for=aids.frames.guide,
        steadier=aids.steadier,
    )
    written = 0

    def wrote(frame: int, path: Path, kept: bool) -> None:
        nonlocal written
        if kept:
            ctx.log.info("frame %d already written by this job; kept %s", frame, path.name)
        else:
            written += 1
            ctx.log.info("wrote frame %d → %s", frame, path.name)

    def written_by_this_job(path: Path) -> bool:
        """The frame on disk is this job's (mattes are renamed into place whole, so it is complete).
        A killed attempt's half-written temporary is removed here, before the frame is written again."""
        if remove_partial_writes(path):
            ctx.log.info("removed a partial write of %s left by a killed attempt", path.name)
        if not path.exists():
            return False
        try:
            return read_exr_header(path).get("mattefarm/job") == job.id
        except Exception:
            return False

    try:
        export_stage(
            target,
            exported,
            store,
            ctx.reporter,
            positions=ctx.positions,
            keep_existing=written_by_this_job,
            wrote=wrote,
        )
    finally:  # frames an interrupted attempt wrote count too: the next one keeps them
        ctx.store.add_counters(job.id, {"frames_written": written, "frames_read_export": aids.frames.decoded})


def _finalise(ctx: StageTask) -> None:
    """Review media and the manifest, once every frame is on disk; then the scratch goes."""
    job, plate, settings = ctx.job, ctx.plate, ctx.settings
    decoder = ctx.decoder()
    output = SequencePattern.parse(job.output_pattern)
    stem = Path(job.output_pattern).name.split(".")[0]
    layers = [ExportedLayer(layer.id, layer.name) for layer in job.layers]
    movie, sheet = (
        Path(job.output_dir) / "review" / f"{stem}.mp4",
        Path(job.output_dir) / "review" / f"{stem}_contact.jpg",
    )
    manifest = Path(job.output_dir) / f"{stem}.json"
    # The finalise task is these files' only writer: what a killed attempt left half-written goes.
    for path, suffix in ((movie, ".mp4"), (sheet, ".jpg"), (manifest, TEMP_SUFFIX)):
        if remove_partial_writes(path, suffix):
            ctx.log.info("removed a partial write of %s left by a killed attempt", path.name)
    links = None
    if settings.review:
        frame_headers = FrameHeaders(plate)
        review = ReviewWriter(
            decoder=decoder,
            movie_path=movie,
            sheet_path=sheet,
            layer_names=[layer.name for layer in layers],
            shot=job.shot,
            version=job.version,
            fps=plate.info.fps or Fraction(settings.review_fps).limit_denominator(1001),
            max_side=settings.review_max_side,
            timecode_text=frame_headers.timecode_text,
        )
        try:
            store = LayerStore(ctx.scratch)
            skipped = set(job.missing_frames)
            for pos, frame in enumerate(plate.frames):
                if pos:  # hold a slate for each skipped source frame between this one and the last
                    for gap in range(plate.frames[pos - 1] + 1, frame):
                        if gap in skipped:
                            review.add_slate(gap)
                review.add(frame, frame_logits(store, pos, layers))
                ctx.reporter.advanced(StageName.EXPORT, pos + 1)
                if ctx.reporter.cancel_requested():
                    raise JobCanceled("canceled while writing review media")
            links = review.close()
        finally:
            review.abort()  # no-op after close; otherwise drops the half-written movie
    if links:
        ctx.store.record_run(
            job.id,
            review=ReviewLinks(
                movie=str(links[0]),
                contact_sheet=str(links[1]),
                movie_url=f"/jobs/{job.id}/review/movie",
                contact_sheet_url=f"/jobs/{job.id}/review/contact-sheet",
            ),
        )
    written = [output.path_for(frame) for frame in plate.frames]
    review_files = {"movie": links[0].name, "contact_sheet": links[1].name} if links else None
    status = ctx.store.get(job.id)
    if status is None:
        raise LookupError(f"job {job.id} left the store while it was finalised")
    write_json_atomic(manifest, job_manifest(status, plate, decoder.colour, written, review_files))
    ctx.store.record_run(job.id, manifest=str(manifest))
    clear_incomplete(Path(job.output_dir))  # a retried job that failed before is a delivery now
    shutil.rmtree(ctx.scratch, ignore_errors=True)
    ctx.log.info("manifest %s; %d frames", manifest.name, len(written))


RUNNERS: dict[tuple[StageName, TaskKind], Callable[[StageTask], None]] = {
    (StageName.DETECT, TaskKind.FRAMES): _analysis,
    (StageName.SEGMENT, TaskKind.FRAMES): _analysis,
    (StageName.TRACK, TaskKind.FRAMES): _analysis,
    (StageName.EXPORT, TaskKind.FRAMES): _export,
    (StageName.EXPORT, TaskKind.FINALISE): _finalise,
}


def run_stage_task(ctx: StageTask) -> None:
    RUNNERS[(ctx.task.stage, ctx.task.kind)](ctx)
