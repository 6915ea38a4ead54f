"""The dispatcher and reconciler: the loop that keeps the broker in step with the database.

Each tick it (1) marks workers with a stale heartbeat offline and retries their running tasks,
(2) re-sends queued tasks whose message the broker lost (a Redis crash) and propagations whose
worker went quiet, and (3) sends waiting
tasks, in priority order, to the workers that are free. Several dispatchers may run at once (one
per API process, and each worker after its task): every step is a compare-and-set.
Webhooks are not sent here: a job's closing owes one in the outbox, and ``WebhookSender`` posts it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from farm_config.settings import Settings
from schemas.refine import PropagationState
from schemas.task import FailureClass
from services.errors import QueueUnavailable
from services.farm.closing import after_job_closed
from services.scheduling.dispatch import QueueNames, plan_dispatch
from services.store import JobStore
from services.store.farm_history import FarmHistoryStore
from services.store.refine_tasks import RefineTasks
from services.store.task_store import TaskStore
from services.store.worker_registry import WorkerRegistry

log = logging.getLogger(__name__)


class Broker(Protocol):
    def send(self, task_id: int, token: str, queue: str) -> None: ...
    def send_propagation(self, task_id: int, queue: str) -> None: ...
    def depth(self, queues: list[str]) -> dict[str, int]: ...


NONE_FREE_HOLD_S = 0.1  # a wake this soon after finding no free worker does not ask again


@dataclass
class Dispatcher:
    settings: Settings
    tasks: TaskStore
    workers: WorkerRegistry
    broker: Broker
    name: str = "dispatcher"
    refine_tasks: RefineTasks | None = None
    jobs: JobStore | None = None  # to mark the version folder of a job a dead worker's task closed
    history: FarmHistoryStore | None = None  # samples the farm's load for the monitors' history
    _wake: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _none_free_at: float | None = field(default=None, init=False, repr=False)  # monotonic

    def tick(self) -> None:
        self.reconcile()
        self.dispatch()

    def dispatch(self) -> int:
        """Send what the free workers can take now; returns the messages sent."""
        free = self.workers.free()
        if not free:
            self._none_free_at = time.monotonic()
            return 0
        self._none_free_at = None
        plan = plan_dispatch(
            self.tasks.candidates(limit=max(50, 4 * len(free))),
            free,
            self.tasks.queued_by_queue(),
            names=QueueNames(self.settings.gpu_queue, self.settings.cpu_queue),
            show_gpu_caps=self.settings.show_gpu_caps,
            show_gpu_busy=self.tasks.gpu_busy_by_show(),
        )
        sent = 0
        for assignment in plan:
            token = self.tasks.mark_queued(assignment.task_id, assignment.queue)
            if token is None:
                continue  # another dispatcher sent it first
            try:
                self.broker.send(assignment.task_id, token, assignment.queue)
            except QueueUnavailable:
                self.tasks.unqueue(assignment.task_id, token)
                log.warning("broker unreachable; %d task(s) stay waiting", len(plan) - sent)
                break
            sent += 1
        return sent

    def reconcile(self) -> None:
        gone = self.workers.mark_stale_offline()
        if gone:
            log.warning("worker(s) stopped heartbeating: %s", ", ".join(gone))
        if self.history is not None:
            self.history.sample(self.settings.history_sample_s)
        forgotten = self.workers.forget_offline(self.settings.worker_forget_after_s)
        if forgotten:
            log.info(
                "worker(s) offline for over %.0fs, dropped from the list: %s",
                self.settings.worker_forget_after_s,
                ", ".join(forgotten),
            )
        hosts = {w.name: w.host for w in self.workers.all()}
        for task_id, job_id, worker in self.tasks.stale_running(self.settings.heartbeat_timeout_s):
            closed = self.tasks.fail(  # a job this closes owes its webhook in the outbox; the sender posts it
                task_id,
                None,
                self.name,
                hosts.get(worker or "", ""),
                FailureClass.WORKER_LOST,
                f"worker {worker} stopped heartbeating (killed, crashed or cut off)",
            )
            if closed.job_closed and self.jobs is not None:
                after_job_closed(self.jobs, job_id)
        self.reconcile_propagations()
        queued = self.tasks.queued_by_queue()
        if not queued:
            return
        try:
            depth = self.broker.depth(sorted(queued))
        except Exception as exc:
            log.warning("cannot read queue depths (%s); lost messages are checked next time", exc)
            return
        for queue, count in queued.items():
            held = depth.get(queue, 0)
            if held < count:
                lost = self.tasks.requeue_lost(queue, held, self.settings.lost_message_s, self.name)
                if lost:
                    log.warning("%d task(s) lost their message on %s; sending again", lost, queue)

    def reconcile_propagations(self) -> None:
        """A propagation whose worker went quiet goes to another worker, up to its attempt limit;
        a queued one goes again when the refine queue lost its message."""
        if self.refine_tasks is None:
            return
        stale = self.refine_tasks.stale(self.settings.refine_stale_s)
        if not stale:
            return
        try:
            waiting = self.broker.depth([self.settings.refine_queue]).get(self.settings.refine_queue, 0)
        except Exception:
            waiting = 0
        for task in stale:
            if task.state == PropagationState.QUEUED and waiting:
                continue  # still in the queue, behind other work: not lost
            if task.state == PropagationState.RUNNING and task.attempts >= self.settings.refine_attempts:
                self.refine_tasks.fail(
                    task.task_id, None, f"{task.attempts} workers stopped while running it (last: {task.worker})"
                )
                continue
            if not self.refine_tasks.requeue(task.task_id, self.settings.refine_stale_s):
                continue  # it moved meanwhile
            log.warning("propagation %s (%s) sent again: worker %s went quiet", task.task_id, task.job_id, task.worker)
            try:
                self.broker.send_propagation(task.task_id, self.settings.refine_queue)
            except QueueUnavailable:
                return  # stays queued; the next tick tries again

    def run(self, stop: threading.Event) -> None:
        """Reconcile and dispatch every ``dispatch_every_s``; between ticks, :meth:`wake` sends
        at once (many submissions in a burst wake it once: one dispatch, not one per request)."""
        last_tick = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() - last_tick >= self.settings.dispatch_every_s:
                    last_tick = time.monotonic()
                    self.tick()
                elif not self._none_free_lately():
                    self.dispatch()
            except Exception:
                log.exception("dispatcher tick failed; trying again")
            # short waits so a stop is seen within half a second; a wake ends the wait at once
            self._wake.wait(min(0.5, max(0.0, last_tick + self.settings.dispatch_every_s - time.monotonic())))
            self._wake.clear()

    def _none_free_lately(self) -> bool:
        """The last dispatch, under NONE_FREE_HOLD_S ago, found every worker busy. A burst of
        submissions then wakes the loop for nothing: workers send themselves the next task when
        they finish one, and the next tick sees a worker that came online. Asking the database
        on every wake cost ~0.5 ms of the API's CPU per submission under load."""
        at = self._none_free_at
        return at is not None and time.monotonic() - at < NONE_FREE_HOLD_S

    def wake(self) -> None:
        """Dispatch now on the loop's thread, not the caller's (a submit or a control returns at once)."""
        self._wake.set()

    def start_thread(self) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name="mattefarm-dispatcher", daemon=True)
        thread.start()
        return thread, stop
