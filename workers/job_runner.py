"""What a worker does with a job id: claim it, run the stages, record everything in the store.

The Celery tasks in ``workers.tasks`` are thin wrappers over :class:`WorkerRuntime` methods,
so the whole flow is testable without a broker.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm_config.settings import Settings
from schemas import JobState, JobStatus, ModelsUsed, StageName, StageState, split_prompt
from schemas.frames import format_frame_range
from services.store import Database, JobStore
from services.store.repository import Claim
from workers.io.plate import PlateError, PlateInfo, resolve_plate
from workers.io.sequence import SequencePattern
from workers.models.builder import build_models
from workers.models.interfaces import ModelSet
from workers.pipeline.frame_store import LayerStore
from workers.pipeline.shot_analysis import analyse_shot
from workers.pipeline.stages import (
    ExportedLayer,
    JobCanceled,
    export_stage,
    write_json_atomic,
)

log = logging.getLogger(__name__)
VERSION = "0.1.0"
RANDOM_WEIGHTS_WARNING = (
    "RANDOM WEIGHTS: this job ran untrained models (MATTEFARM_WEIGHTS=random); "
    "its mattes are meaningless and only its timings are real"
)


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
            self.store.finish(job_id, JobState.CANCELED, self.name, error="canceled")
            return False
        if claim == Claim.GAVE_UP:
            self.store.finish(
                job_id,
                JobState.FAILED,
                self.name,
                error=f"gave up after {self.settings.max_attempts} attempts (the worker died each time)",
            )
            return False
        if claim != Claim.RUN:
            log.info("job %s: nothing to do (%s)", job_id, claim)
            return False
        job = self._job(job_id)
        try:
            plate = self._plate(job)
            models = self.models
            self._record_models(job_id, models)
            reporter = StoreReporter(self.store, job_id, self.progress_every_s)
            result = analyse_shot(
                plate, split_prompt(job.spec.prompt), job.spec.options, models, reporter, _scratch(job)
            )
            self.store.record_run(job_id, counters=result.counters, layers=result.layers)
            return True
        except JobCanceled:
            self.store.finish(job_id, JobState.CANCELED, self.name, error="canceled while running")
        except PlateError as exc:
            self.store.finish(job_id, JobState.FAILED, self.name, error=f"{exc.field}: {exc.message}")
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self.store.finish(job_id, JobState.FAILED, self.name, error=f"{type(exc).__name__}: {exc}")
        return False

    # --- the CPU part: EXR packing and the manifest -----------------------------------------

    def export_job(self, job_id: str) -> None:
        job = self._job(job_id)
        if job.state != JobState.RUNNING:
            if job.state == JobState.CANCELING:
                self.store.finish(job_id, JobState.CANCELED, self.name, error="canceled before export")
            return
        try:
            plate = self._plate(job)
            output = SequencePattern.parse(job.output_pattern)
            outputs = {frame: output.path_for(frame) for frame in plate.frames}
            header = _exr_header(job, plate)
            headers = {
                frame: header | {"mattefarm/sourceFrame": str(frame), "mattefarm/source": str(plate.path_for(frame))}
                for frame in plate.frames
            }
            written = export_stage(
                plate.frames,
                (plate.width, plate.height),
                [ExportedLayer(layer.id, layer.name) for layer in job.layers],
                LayerStore(_scratch(job)),
                outputs,
                headers,
                StoreReporter(self.store, job_id, self.progress_every_s),
            )
            status = self._job(job_id)
            counters = status.counters.model_dump() | {"frames_written": len(written)}
            self.store.record_run(job_id, counters=counters)
            manifest = Path(job.output_dir) / f"{Path(job.output_pattern).name.split('.')[0]}.json"
            write_json_atomic(manifest, _manifest(self._job(job_id), plate, written))
            shutil.rmtree(_scratch(job), ignore_errors=True)
            self.store.finish(job_id, JobState.SUCCEEDED, self.name, manifest=str(manifest))
        except JobCanceled:
            self.store.finish(job_id, JobState.CANCELED, self.name, error="canceled during export")
        except Exception as exc:
            log.exception("job %s export failed", job_id)
            self.store.finish(job_id, JobState.FAILED, self.name, error=f"export: {type(exc).__name__}: {exc}")

    # --- helpers ----------------------------------------------------------------------------

    def _job(self, job_id: str) -> JobStatus:
        job = self.store.get(job_id)
        if job is None:
            raise LookupError(f"job {job_id} is not in the store")
        return job

    def _plate(self, job: JobStatus) -> PlateInfo:
        return resolve_plate(job.spec.plate, job.frames)

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


def _exr_header(job: JobStatus, plate: PlateInfo) -> dict[str, Any]:
    header: dict[str, Any] = {}
    if plate.exr_header:
        for key in ("displayWindow", "dataWindow", "pixelAspectRatio"):
            if key in plate.exr_header:
                header[key] = plate.exr_header[key]
    random_weights = job.models is not None and job.models.weights == "random"
    comments = f"Matte Farm roto for {job.shot} v{job.version:03d}, prompt '{job.spec.prompt}'"
    return header | {
        "owner": job.user,
        "comments": f"{RANDOM_WEIGHTS_WARNING}. {comments}" if random_weights else comments,
        "mattefarm/version": VERSION,
        "mattefarm/job": job.id,
        "mattefarm/prompt": job.spec.prompt,
        "mattefarm/weights": job.models.weights if job.models else "unknown",
        "mattefarm/randomWeights": "true" if random_weights else "false",
        "mattefarm/models": json.dumps(job.models.model_dump() if job.models else {}),
        "mattefarm/inferenceMaxSide": str(job.spec.options.max_side),
        "mattefarm/strategy": str(job.spec.options.strategy),
        "mattefarm/layers": json.dumps([{"name": ly.name, "label": ly.label} for ly in job.layers]),
    }


def _manifest(job: JobStatus, plate: PlateInfo, written: list[Path]) -> dict[str, Any]:
    return {
        "mattefarm_version": VERSION,
        "job": job.id,
        "user": job.user,
        "show": job.show,
        "shot": job.shot,
        "version": job.version,
        "random_weights": bool(job.models and job.models.weights == "random"),
        "warnings": job.warnings,
        "plate": {
            "pattern": plate.pattern.display,
            "width": plate.width,
            "height": plate.height,
            "format": plate.format,
        },
        "frames": format_frame_range(plate.frames),
        "missing_frames": [],
        "prompt": job.spec.prompt,
        "options": job.spec.options.model_dump(),
        "models": job.models.model_dump() if job.models else None,
        "layers": [layer.model_dump() for layer in job.layers],
        "stages": [
            {"name": st.name, "seconds": st.seconds, "frames": st.frames_done}
            for st in job.stages
            if st.state == StageState.SUCCEEDED or st.name == StageName.EXPORT
        ],
        "counters": job.counters.model_dump(),
        "output_pattern": job.output_pattern,
        "files": [p.name for p in written],
    }
