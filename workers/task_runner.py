"""What a worker does with a task message: claim the attempt, run its chunk of its stage, record
the outcome, and fill the free slot it leaves.

The Celery task in ``workers.tasks`` is a thin wrapper over :meth:`WorkerRuntime.run_task`, so the
whole flow is testable without a broker.
"""

from __future__ import annotations

import bisect
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from farm_config.settings import Settings
from schemas import JobStatus, ModelsUsed, ReviewLinks, StageName, WorkerInfo, split_prompt
from schemas.task import TaskKind, TaskStatus
from services.dispatcher import Dispatcher
from services.queue import JobQueue
from services.scheduling.retry import RetryPolicy
from services.store import Database, JobStore
from services.store.tasks import Closed, TaskStore
from services.store.workers import WorkerRegistry
from services.webhooks import notify_finished
from workers import gpu
from workers.failures import InjectedFault, classify, describe
from workers.io.exr import read_exr_header, remove_partial_writes, set_exr_threads
from workers.io.plate import PlateDecoder, PlateInfo, resolve_plate
from workers.io.review import ReviewWriter
from workers.io.sequence import SequencePattern
from workers.lighter import lighter_settings
from workers.models.builder import build_models
from workers.models.interfaces import ModelSet
from workers.pipeline.export import ExportedLayer, MatteSequence, export_stage, frame_logits
from workers.pipeline.frame_store import BoxStore, LayerStore
from workers.pipeline.frames import FrameSource
from workers.pipeline.stages import JobCanceled, Shot, detect_stage, detection_positions, segment_stage, window_keep
from workers.pipeline.stages import write_json_atomic as write_manifest
from workers.pipeline.tracking import track_stage
from workers.provenance import RANDOM_WEIGHTS_WARNING, FrameHeaders, job_manifest, matte_header
from workers.task_context import TaskReporter, WorkerPulse

log = logging.getLogger(__name__)
task_log = logging.getLogger("workers.task")
task_log.setLevel(logging.INFO)  # the task log keeps INFO whatever the process's log level


def models_key(settings: Settings) -> str:
    return f"{settings.model_backend}/{settings.sam2_size}/{settings.weights}"


def worker_name() -> str:
    node = os.environ.get("MATTEFARM_WORKER_NODE") or f"worker@{socket.gethostname()}"
    return f"{node}:{os.getpid()}"


@dataclass
class WorkerRuntime:
    """Per-process worker state: store connections, models (loaded once after fork), heartbeat."""

    settings: Settings
    register: bool = True  # register in the worker registry and run the heartbeat thread
    queue: JobQueue | None = None  # to fill free slots after a task; None: leave it to the dispatcher
    name: str = field(default_factory=worker_name)
    host: str = field(default_factory=socket.gethostname)
    db: Database = field(init=False)
    store: JobStore = field(init=False)
    tasks: TaskStore = field(init=False)
    registry: WorkerRegistry = field(init=False)
    pulse: WorkerPulse = field(init=False)
    _models: dict[str, ModelSet] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        s = self.settings
        set_exr_threads(s.exr_threads)
        self.db = Database(s.resolved_database_url)
        self.db.upgrade()
        self.store = JobStore(self.db)
        self.tasks = TaskStore(self.db, RetryPolicy(s.retry_backoff_s, s.retry_backoff_max_s), s.blocklist_after)
        self.registry = WorkerRegistry(self.db, s.heartbeat_timeout_s)
        self.pulse = WorkerPulse(
            self.registry, self.tasks, self.name, s.heartbeat_s, models=lambda: sorted(self._models)
        )
        if self.register:
            facts = gpu.gpu_facts()
            self.registry.register(
                WorkerInfo(
                    name=self.name,
                    host=self.host,
                    pid=os.getpid(),
                    queues=s.consumed_queues,
                    profile=s.worker_profile,
                    device=s.device,
                    gpu_name=facts.name,
                    gpu_memory_total_mb=facts.total_mb or self._profile_memory_mb(),
                )
            )
            self.pulse.start()

    def _profile_memory_mb(self) -> int | None:
        if not self.settings.worker_profile:
            return None
        from farm_config.profiles import get_profile

        return round(get_profile(self.settings.worker_profile).gpu_memory_gb * 1024) or None

    def models_for(self, settings: Settings) -> ModelSet:
        """The models for these settings, built once per process (an OOM retry may need a smaller SAM2)."""
        key = models_key(settings)
        if key not in self._models:
            started = time.monotonic()
            self._models[key] = build_models(settings)
            log.info("models %s loaded in %.1fs", key, time.monotonic() - started)
        return self._models[key]

    @property
    def models(self) -> ModelSet:
        return self.models_for(self.settings)

    # --- one task ---------------------------------------------------------------------------

    def run_task(self, task_id: int, token: str) -> Closed | None:
        """Run one attempt of a task; returns its outcome (None when the message was stale)."""
        claimed = self.tasks.claim(task_id, token, self.name, self.host)
        if not claimed.run or claimed.task is None:
            log.info("task %s: not run (%s)", task_id, claimed.reason)
            self.fill_free_slots()
            return None
        task = claimed.task
        self.pulse.begin(task)
        started = time.monotonic()
        try:
            task_log.info(
                "%s of job %s, attempt %d of %d on %s",
                task.label,
                task.job_id,
                task.attempts,
                task.max_attempts,
                self.name,
            )
            self._execute(task)
            closed = self.tasks.succeed(task.id, token, self.name, time.monotonic() - started, gpu.peak_mb())
            task_log.info("%s succeeded in %.1fs", task.label, time.monotonic() - started)
        except JobCanceled as exc:
            if self.pulse.stopping and not self.pulse.stop_task:
                task_log.warning("worker %s is shutting down: %s goes back to the queue", self.name, task.label)
                closed = self.tasks.release(task.id, token, self.name, f"worker {self.name} shut down")
            else:
                task_log.info("%s canceled: %s", task.label, exc)
                closed = self.tasks.canceled(task.id, token, self.name)
        except Exception as exc:
            failure = classify(exc)
            task_log.error("%s failed (%s): %s", task.label, failure, describe(exc), exc_info=True)
            closed = self.tasks.fail(task.id, token, self.name, self.host, failure, describe(exc))
        finally:
            self.pulse.end()
        if closed.job_closed:
            notify_finished(self.store, task.job_id, self.name)
        if not self.pulse.stopping:  # a draining worker takes nothing new
            self.fill_free_slots()
        return closed

    def fill_free_slots(self) -> None:
        """Dispatch at once rather than wait for the dispatcher's next tick."""
        if self.queue is None:
            return
        try:
            Dispatcher(self.settings, self.tasks, self.registry, self.queue, self.store, name=self.name).dispatch()
        except Exception:
            log.warning("could not dispatch after the task; the dispatcher will", exc_info=True)

    def _execute(self, task: TaskStatus) -> None:
        job = self.store.get(task.job_id)
        if job is None:
            raise LookupError(f"job {task.job_id} is not in the store")
        self._inject_fault(task)
        first = bisect.bisect_left(job.frames, task.first_frame)
        positions = range(first, bisect.bisect_right(job.frames, task.last_frame))
        plate = resolve_plate(job.spec.plate, job.frames, part=job.spec.plate_part)
        if task.stage == StageName.EXPORT:
            if task.kind == TaskKind.FINALISE:
                self._finalise(job, plate)
            else:
                self._export(job, plate, positions)
            return
        settings, changes = lighter_settings(self.settings, task.lighter, job.spec.allow_smaller_model)
        if changes:
            task_log.warning("out-of-memory retry, lighter settings: %s", "; ".join(changes))
        models = self.models_for(settings)
        self._record_models(job.id, models)
        opts = job.spec.options
        decoder = self._decoder(job, plate)
        scratch = _scratch(job.output_dir)
        before = models.counters()
        keep = window_keep(opts)
        with FrameSource(
            decoder, keep=keep, threads=self.settings.decode_threads, ahead=self.settings.decode_ahead
        ) as source:
            shot = Shot.open(source, opts, models, TaskReporter(self.pulse, task_log), scratch)
            detect_at = [p for p in detection_positions(len(source), opts) if p in positions]
            if task.stage == StageName.DETECT:
                boxes = BoxStore(scratch)
                for pos, found in detect_stage(shot, split_prompt(job.spec.prompt), detect_at).items():
                    boxes.put(pos, found)
            elif task.stage == StageName.SEGMENT:
                stored = BoxStore(scratch)
                segment_stage(shot, {pos: stored.get(pos) for pos in detect_at})
            else:
                layers = track_stage(shot)
                self.store.record_run(job.id, layers=layers)
                task_log.info("%d layer(s): %s", len(layers), ", ".join(layer.name for layer in layers))
        counters = dict(models.counters() - before)
        counters["frames_read"] = source.decoded
        counters["decode_wait_ms"] = round(source.wait_s * 1000)
        self.store.add_counters(job.id, counters)

    def _export(self, job: JobStatus, plate: PlateInfo, positions: range) -> None:
        decoder = self._decoder(job, plate)
        target = MatteSequence(
            frames=plate.frames,
            geometry=plate.geometry,
            output_for=SequencePattern.parse(job.output_pattern).path_for,
            header=matte_header(job, plate, decoder.colour, decoder.size),
            frame_header=FrameHeaders(plate),
        )
        written = 0

        def wrote(frame: int, path: Path, kept: bool) -> None:
            nonlocal written
            if kept:
                task_log.info("frame %d already written by this job; kept %s", frame, path.name)
            else:
                written += 1
                task_log.info("wrote frame %d → %s", frame, path.name)

        try:
            export_stage(
                target,
                [ExportedLayer(layer.id, layer.name) for layer in job.layers],
                LayerStore(_scratch(job.output_dir)),
                TaskReporter(self.pulse, task_log),
                positions=positions,
                keep_existing=lambda path: _written_by(path, job.id),
                wrote=wrote,
            )
        finally:  # frames an interrupted attempt wrote count too: the next one keeps them
            self.store.add_counters(job.id, {"frames_written": written})

    def _finalise(self, job: JobStatus, plate: PlateInfo) -> None:
        """Review media and the manifest, once every frame is on disk; then the scratch goes."""
        decoder = self._decoder(job, plate)
        output = SequencePattern.parse(job.output_pattern)
        stem = Path(job.output_pattern).name.split(".")[0]
        layers = [ExportedLayer(layer.id, layer.name) for layer in job.layers]
        links = None
        if self.settings.review:
            frame_headers = FrameHeaders(plate)
            review = ReviewWriter(
                decoder=decoder,
                movie_path=Path(job.output_dir) / "review" / f"{stem}.mp4",
                sheet_path=Path(job.output_dir) / "review" / f"{stem}_contact.jpg",
                layer_names=[layer.name for layer in layers],
                shot=job.shot,
                version=job.version,
                fps=plate.info.fps or Fraction(self.settings.review_fps).limit_denominator(1001),
                max_side=self.settings.review_max_side,
                timecode_text=frame_headers.timecode_text,
            )
            try:
                store = LayerStore(_scratch(job.output_dir))
                reporter = TaskReporter(self.pulse, task_log)
                for pos, frame in enumerate(plate.frames):
                    review.add(frame, frame_logits(store, pos, layers))
                    reporter.advanced(StageName.EXPORT, pos + 1)
                    if reporter.cancel_requested():
                        raise JobCanceled("canceled while writing review media")
                links = review.close()
            finally:
                review.abort()  # no-op after close; otherwise drops the half-written movie
        if links:
            self.store.record_run(
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
        manifest = Path(job.output_dir) / f"{stem}.json"
        status = self.store.get(job.id)
        assert status is not None
        write_manifest(manifest, job_manifest(status, plate, decoder.colour, written, review_files))
        self.store.record_run(job.id, manifest=str(manifest))
        shutil.rmtree(_scratch(job.output_dir), ignore_errors=True)
        task_log.info("manifest %s; %d frames", manifest.name, len(written))

    def _decoder(self, job: JobStatus, plate: PlateInfo) -> PlateDecoder:
        return PlateDecoder.configured(plate, job.spec.options.max_side, job.spec.colourspace, self.settings)

    def _inject_fault(self, task: TaskStatus) -> None:
        kind, _, stage = self.settings.fault.partition("@")
        if not kind or stage != task.stage:
            return
        if kind == "exit":
            task_log.error("fault drill: the worker process exits now")
            os._exit(70)
        if kind == "oom" and task.lighter == 0:
            raise InjectedFault("CUDA out of memory (fault drill): tried to allocate 2.00 GiB")
        if kind == "crash":
            raise InjectedFault(f"fault drill: {task.stage} crashes")

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

    def close(self) -> None:
        self.pulse.close()
        if self.register:
            self.registry.set_state(self.name, "offline")
        if self.queue is not None:
            self.queue.close()
        self.db.dispose()


def _scratch(output_dir: str) -> Path:
    return Path(output_dir) / ".work"


def _written_by(path: Path, job_id: str) -> bool:
    """The frame on disk is this job's (mattes are renamed into place whole, so it is complete).
    A killed attempt's half-written temporary is removed here, before the frame is written again."""
    if remove_partial_writes(path):
        task_log.info("removed a partial write of %s left by a killed attempt", path.name)
    if not path.exists():
        return False
    try:
        return read_exr_header(path).get("mattefarm/job") == job_id
    except Exception:
        return False
