"""While a task runs: the heartbeat thread (liveness, progress, GPU memory, stop signals, the
task's log lines) and the progress reporter the stages call."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas import StageName, WorkerState
from schemas.task import TaskStatus
from services.store.task_store import TaskStore
from services.store.worker_registry import WorkerRegistry
from workers.runtime import gpu
from workers.runtime.fault_drill import kill_at_frame
from workers.runtime.task_log import TaskLogHandler


@dataclass
class WorkerPulse:
    """The worker's heartbeat thread: registry row always, the current task's row while one runs."""

    registry: WorkerRegistry
    tasks: TaskStore
    name: str
    every_s: float
    models: Callable[[], list[str]] = lambda: []
    task: TaskStatus | None = None
    frames_done: int = 0
    stop_task: bool = False  # the task's job (or the task) was canceled
    stopping: bool = False  # an operator or a warm shutdown asked this worker to drain
    log: TaskLogHandler = field(default_factory=TaskLogHandler)
    _wake: threading.Event = field(default_factory=threading.Event)
    _quit: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mattefarm-heartbeat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._quit.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def begin(self, task: TaskStatus) -> None:
        with self._lock:
            self.task, self.frames_done, self.stop_task = task, 0, False
        self.log.take()
        logging.getLogger().addHandler(self.log)
        gpu.reset_peak()
        self.beat()

    def end(self) -> None:
        logging.getLogger().removeHandler(self.log)
        self.flush_log()
        with self._lock:
            self.task = None
        self.beat()

    def flush_log(self) -> None:
        task = self.task
        if task is not None:
            self.tasks.append_log(task.id, task.attempts, self.log.take())

    def beat(self) -> None:
        with self._lock:
            task, done = self.task, self.frames_done
        if task is not None:
            self.stop_task = self.tasks.heartbeat(task.id, done, gpu.peak_mb()) or self.stop_task
            self.flush_log()
        state = self.registry.beat(
            self.name,
            task_id=task.id if task else None,
            job_id=task.job_id if task else None,
            frames_done=done,
            frames_total=task.frames_total if task else 0,
            gpu_memory_used_mb=gpu.used_mb(),
            models=self.models(),
        )
        # an operator's drain (or a warm shutdown) holds while the row says so; an undrain lifts it
        self.stopping = state == WorkerState.STOPPING

    def _run(self) -> None:
        while not self._quit.wait(self.every_s):
            try:
                self.beat()
            except Exception:  # a database blip must not kill the heartbeat thread
                logging.getLogger(__name__).warning("heartbeat failed; retrying", exc_info=True)


class TaskReporter:
    """The stages' progress and stop checks, for one task (the pipeline's StageReporter)."""

    def __init__(self, pulse: WorkerPulse, log: logging.Logger, fault: str = "") -> None:
        self.pulse, self.log, self.fault = pulse, log, fault

    def started(self, stage: StageName, total: int) -> None:
        self.log.info("%s: %d step(s)", stage, total)

    def advanced(self, stage: StageName, done: int) -> None:
        self.pulse.frames_done = done
        if self.fault and self.pulse.task is not None:
            kill_at_frame(self.fault, self.pulse.task, done, self.log)

    def finished(self, stage: StageName, seconds: float) -> None:
        self.log.info("%s: done in %.1fs", stage, seconds)

    def cancel_requested(self) -> bool:
        return self.pulse.stop_task or self.pulse.stopping
