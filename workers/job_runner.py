"""What a worker does with a job id: claim it, run the stages, record everything in the store.

The Celery tasks in ``workers.tasks`` are thin wrappers over :class:`WorkerRuntime` methods,
so the whole flow is testable without a broker.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from farm_config.settings import Settings
from schemas import JobState, JobStatus, ModelsUsed, ReviewLinks, StageName, StageState, split_prompt
from services.store import Database, JobStore
from services.store.repository import Claim
from services.webhooks import notify_finished
from workers.io.exr import set_exr_threads
from workers.io.plate import PlateDecoder, PlateError, PlateInfo, resolve_plate
from workers.io.review import ReviewWriter
from workers.io.sequence import SequencePattern
from workers.models.builder import build_models
from workers.models.interfaces import ModelSet
from workers.pipeline.export import ExportedLayer, MatteSequence, export_stage
from workers.pipeline.frame_store import LayerStore
from workers.pipeline.shot_analysis import analyse_shot
from workers.pipeline.stages import JobCanceled, write_json_atomic
from workers.provenance import RANDOM_WEIGHTS_WARNING, FrameHeaders, job_manifest, matte_header

log = logging.getLogger(__name__)


class StoreReporter:
    """Stage progress into the store, at most a few writes a second; cancel checks likewise."""

    def __init__(self, store: JobStore, job_id: str, every_s: float = 0.5) -> None:
        self.store, self.job_id, self.every_s = store, job_id, every_s
        self._last_write = self._last_check = 0.0
        self._canceled = False
        self._done = 0

    def started(self, stage: StageName, total: int) -> None:
        self._done = 0
        self.store.stage_started(self.job_id, stage, total)

    def advanced(self, stage: StageName, done: int) -> None:
        now = time.monotonic()
        if now - self._last_write >= self.every_s:
            self.store.stage_progress(self.job_id, stage, done)
            self._last_write = now
        self._done = done

    def finished(self, stage: StageName, seconds: float) -> None:
        self.store.stage_progress(self.job_id, stage, self._done)
        self.store.stage_finished(self.job_id, stage, StageState.SUCCEEDED, seconds)

    def cancel_requested(self) -> bool:
        now = time.monotonic()
        if not self._canceled and now - self._last_check >= self.every_s:
            self._canceled = self.store.cancel_requested(self.job_id)
            self._last_check = now
        return self._canceled


@dataclass
class WorkerRuntime:
    """Per-process worker state: the store connection and the models, loaded once after fork."""

    settings: Settings
    db: Database = field(init=False)
    store: JobStore = field(init=False)
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    progress_every_s: float = 0.5  # how often progress is written and the cancel flag read
    _models: ModelSet | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        set_exr_threads(self.settings.exr_threads)
        self.db = Database(self.settings.resolved_database_url)
        self.db.upgrade()
        self.store = JobStore(self.db)

    @property
    def models(self) -> ModelSet:
        if self._models is None:
            started = time.monotonic()
            self._models = build_models(self.settings)
            log.info(
                "models loaded (%s, %s) in %.1fs",
                self._models.backend,
                self._models.weights,
                time.monotonic() - started,
            )
        return self._models

    # --- the GPU part: detect + segment -----------------------------------------------------

    def run_job(self, job_id: str) -> bool:
        """Run detection and segmentation; True when the export should be queued."""
        claim = self.store.claim(job_id, self.name, self.settings.max_attempts)
        if claim == Claim.CANCELED:
            self._finish(job_id, JobState.CANCELED, error="canceled")
            return False
        if claim == Claim.GAVE_UP:
            self._finish(
                job_id,
                JobState.FAILED,
                error=f"gave up after {self.settings.max_attempts} attempts (the worker died each time)",
            )
            return False
        if claim != Claim.RUN:
            log.info("job %s: nothing to do (%s)", job_id, claim)
            return False
        job = self._job(job_id)
        try:
            decoder = self._decoder(job, self._plate(job), job.spec.options.max_side)
            models = self.models
            self._record_models(job_id, models)
            reporter = StoreReporter(self.store, job_id, self.progress_every_s)
            result = analyse_shot(
                decoder,
                split_prompt(job.spec.prompt),
                job.spec.options,
                models,
                reporter,
                _scratch(job),
                decode_threads=self.settings.decode_threads,
                decode_ahead=self.settings.decode_ahead,
            )
            self.store.record_run(job_id, counters=result.counters, layers=result.layers)
            return True
        except JobCanceled:
            self._finish(job_id, JobState.CANCELED, error="canceled while running")
        except PlateError as exc:
            self._finish(job_id, JobState.FAILED, error=f"{exc.field}: {exc.message}")
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self._finish(job_id, JobState.FAILED, error=f"{type(exc).__name__}: {exc}")
        return False

    # --- the CPU part: EXR packing and the manifest -----------------------------------------

    def export_job(self, job_id: str) -> None:
        job = self._job(job_id)
        if job.state != JobState.RUNNING:
            if job.state == JobState.CANCELING:
                self._finish(job_id, JobState.CANCELED, error="canceled before export")
            return
        review: ReviewWriter | None = None
        try:
            plate = self._plate(job)
            models_view = self._decoder(job, plate, job.spec.options.max_side)
            output = SequencePattern.parse(job.output_pattern)
            stem = Path(job.output_pattern).name.split(".")[0]
            frame_headers = FrameHeaders(plate)
            target = MatteSequence(
                frames=plate.frames,
                geometry=plate.geometry,
                output_for=output.path_for,
                header=matte_header(job, plate, models_view.colour, models_view.size),
                frame_header=frame_headers,
            )
            if self.settings.review:
                review = ReviewWriter(
                    decoder=models_view,  # the review passes its own size; one colour conversion serves both
                    movie_path=Path(job.output_dir) / "review" / f"{stem}.mp4",
                    sheet_path=Path(job.output_dir) / "review" / f"{stem}_contact.jpg",
                    layer_names=[layer.name for layer in job.layers],
                    shot=job.shot,
                    version=job.version,
                    fps=plate.info.fps or Fraction(self.settings.review_fps).limit_denominator(1001),
                    max_side=self.settings.review_max_side,
                    timecode_text=frame_headers.timecode_text,
                )
            written = export_stage(
                target,
                [ExportedLayer(layer.id, layer.name) for layer in job.layers],
                LayerStore(_scratch(job)),
                StoreReporter(self.store, job_id, self.progress_every_s),
                review,
            )
            links = review.close() if review is not None else None
            status = self._job(job_id)
            counters = status.counters.model_dump() | {"frames_written": len(written)}
            review_links = (
                ReviewLinks(
                    movie=str(links[0]),
                    contact_sheet=str(links[1]),
                    movie_url=f"/jobs/{job_id}/review/movie",
                    contact_sheet_url=f"/jobs/{job_id}/review/contact-sheet",
                )
                if links
                else None
            )
            self.store.record_run(job_id, counters=counters, review=review_links)
            manifest = Path(job.output_dir) / f"{stem}.json"
            review_files = {"movie": links[0].name, "contact_sheet": links[1].name} if links else None
            write_json_atomic(
                manifest, job_manifest(self._job(job_id), plate, models_view.colour, written, review_files)
            )
            shutil.rmtree(_scratch(job), ignore_errors=True)
            self._finish(job_id, JobState.SUCCEEDED, manifest=str(manifest))
        except JobCanceled:
            self._finish(job_id, JobState.CANCELED, error="canceled during export")
        except PlateError as exc:
            self._finish(job_id, JobState.FAILED, error=f"{exc.field}: {exc.message}")
        except Exception as exc:
            log.exception("job %s export failed", job_id)
            self._finish(job_id, JobState.FAILED, error=f"export: {type(exc).__name__}: {exc}")
        finally:
            if review is not None:
                review.abort()  # no-op after close; otherwise drops the half-written movie

    # --- helpers ----------------------------------------------------------------------------

    def _finish(self, job_id: str, state: JobState, **details: str) -> None:
        """Close the job; whoever closes it sends its webhook, so it goes out once."""
        if self.store.finish(job_id, state, self.name, **details):
            notify_finished(self.store, job_id, self.name)

    def _job(self, job_id: str) -> JobStatus:
        job = self.store.get(job_id)
        if job is None:
            raise LookupError(f"job {job_id} is not in the store")
        return job

    def _plate(self, job: JobStatus) -> PlateInfo:
        return resolve_plate(job.spec.plate, job.frames, part=job.spec.plate_part)

    def _decoder(self, job: JobStatus, plate: PlateInfo, max_side: int) -> PlateDecoder:
        return PlateDecoder.configured(plate, max_side, job.spec.colourspace, self.settings)

    def _record_models(self, job_id: str, models: ModelSet) -> None:
        used = ModelsUsed(
            backend=models.backend,
            weights=models.weights,
            detector=models.detector.name,
            segmenter=models.segmenter.name,
            device=models.device,
            checkpoints=models.checkpoints,
        )
        warning = RANDOM_WEIGHTS_WARNING if models.weights == "random" else None
        self.store.record_run(job_id, models=used, warning=warning)
        if warning:
            log.warning("job %s: %s", job_id, warning)

    def close(self) -> None:
        self.db.dispose()


def _scratch(job: JobStatus) -> Path:
    return Path(job.output_dir) / ".work"
