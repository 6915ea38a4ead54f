"""What a worker process does with a task message: claim the attempt, run the task, record the
outcome. It reports to the store only; dispatching the next task and posting webhooks belong to
the farm (``services.farm.worker_node`` wraps this for the Celery task).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field

from farm_config.profiles import get_profile
from farm_config.settings import Settings
from schemas import WorkerInfo, WorkerState
from schemas.task import TaskStatus
from services.store import FarmStores
from services.store.task_store import Closed
from workers.io.exr import set_exr_threads
from workers.io.plate import resolve_plate
from workers.models.interfaces import ModelSet
from workers.pipeline.stages import JobCanceled
from workers.runtime import gpu
from workers.runtime.failures import ModelsUnavailable, classify, describe
from workers.runtime.fault_drill import inject_fault
from workers.runtime.heartbeat import TaskReporter, WorkerPulse
from workers.runtime.model_cache import ModelCache
from workers.runtime.stage_tasks import StageTask, run_stage_task

log = logging.getLogger(__name__)
task_log = logging.getLogger("workers.task")
task_log.setLevel(logging.INFO)  # the task log keeps INFO whatever the process's log level


UNHEALTHY_BACKOFF_S = 2.0


def worker_name(settings: Settings, slot: int | None = None) -> str:
    """The Celery node (``MATTEFARM_WORKER_NODE``), then its pool slot: the same name when Celery
    recycles the child or the node restarts, so the worker list keeps one row per slot, not one
    per process that ever ran. Without a slot (a process outside Celery), the pid."""
    node = settings.worker_node or f"worker@{socket.gethostname()}"
    return f"{node}:{slot if slot is not None else os.getpid()}"


@dataclass
class WorkerRuntime:
    """Per-process worker state: the stores, the models (loaded once after fork), the heartbeat."""

    settings: Settings
    stores: FarmStores
    register: bool = True  # register in the worker registry and run the heartbeat thread
    name: str = ""  # default: worker_name(settings)
    host: str = field(default_factory=socket.gethostname)
    models_cache: ModelCache = field(default_factory=ModelCache)
    pulse: WorkerPulse = field(init=False)
    problem: str | None = None  # set when the models would not load: the worker takes nothing more

    def __post_init__(self) -> None:
        s = self.settings
        self.name = self.name or worker_name(s)
        set_exr_threads(s.exr_threads)
        self.pulse = WorkerPulse(
            self.stores.workers, self.stores.tasks, self.name, s.heartbeat_s, models=self.models_cache.names
        )
        if self.register:
            facts = gpu.gpu_facts()
            self.stores.workers.register(
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
        return round(get_profile(self.settings.worker_profile).gpu_memory_gb * 1024) or None

    def models_for(self, settings: Settings) -> ModelSet:
        try:
            return self.models_cache.get(settings)
        except Exception as exc:
            self.mark_unhealthy(f"its models would not load: {describe(exc)}")
            raise ModelsUnavailable(self.problem or "") from exc

    def mark_unhealthy(self, problem: str) -> None:
        self.problem = problem
        log.error("worker %s is unhealthy: %s", self.name, problem)
        if self.register:
            self.stores.workers.set_unhealthy(self.name, problem)

    @property
    def models(self) -> ModelSet:
        return self.models_for(self.settings)

    @property
    def stopping(self) -> bool:
        """An operator or a warm shutdown asked this worker to drain: it takes nothing new."""
        return self.pulse.stopping

    def run_task(self, task_id: int, token: str) -> Closed | None:
        """Run one attempt of a task; returns its outcome (None when the message was stale)."""
        claimed = self.stores.tasks.claim(task_id, token, self.name, self.host)
        if not claimed.run or claimed.task is None:
            log.info("task %s: not run (%s)", task_id, claimed.reason)
            return None
        task = claimed.task
        if self.problem is not None:  # a message reached a worker that cannot work: hand it back, uncounted
            closed = self.stores.tasks.release(
                task.id, token, self.name, f"worker {self.name} is unhealthy: {self.problem}"
            )
            time.sleep(UNHEALTHY_BACKOFF_S)  # let a healthy worker take the message next
            return closed
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
            closed = self.stores.tasks.succeed(task.id, token, self.name, time.monotonic() - started, gpu.peak_mb())
            task_log.info("%s succeeded in %.1fs", task.label, time.monotonic() - started)
        except JobCanceled as exc:
            if self.pulse.stopping and not self.pulse.stop_task:
                task_log.warning("worker %s is shutting down: %s goes back to the queue", self.name, task.label)
                closed = self.stores.tasks.release(task.id, token, self.name, f"worker {self.name} shut down")
            else:
                task_log.info("%s canceled: %s", task.label, exc)
                closed = self.stores.tasks.canceled(task.id, token, self.name)
        except Exception as exc:
            failure = classify(exc)
            task_log.error("%s failed (%s): %s", task.label, failure, describe(exc), exc_info=True)
            closed = self.stores.tasks.fail(task.id, token, self.name, self.host, failure, describe(exc))
        finally:
            self.pulse.end()
        return closed

    def _execute(self, task: TaskStatus) -> None:
        job = self.stores.jobs.get(task.job_id)
        if job is None:
            raise LookupError(f"job {task.job_id} is not in the store")
        inject_fault(self.settings.fault, task, task_log)
        run_stage_task(
            StageTask(
                task=task,
                job=job,
                plate=resolve_plate(job.spec.plate, job.frames, part=job.spec.plate_part),
                settings=self.settings,
                store=self.stores.jobs,
                reporter=TaskReporter(self.pulse, task_log, self.settings.fault),
                log=task_log,
                models=self.models_for,
            )
        )

    def close(self) -> None:
        self.pulse.close()
        if self.register:
            self.stores.workers.set_state(self.name, WorkerState.OFFLINE)
