"""Fire drills (``MATTEFARM_FAULT``): make a stage's task crash, run out of memory, or kill its
worker process (at its start, or with SIGKILL at a given frame), so operators and the fault tests
see the farm recover."""

from __future__ import annotations

import logging
import os
import signal

from schemas.task import TaskKind, TaskStatus
from workers.runtime.failures import InjectedFault


def drill_stage(task: TaskStatus) -> str:
    """The stage name a drill names: a stage, or 'finalise' for the finalise task."""
    return "finalise" if task.kind == TaskKind.FINALISE else str(task.stage)


def kill_process() -> None:
    """What a SIGKILL does: no goodbye, no ack, no cleanup (the in-process fault tests replace it)."""
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_frame(fault: str, task: TaskStatus, done: int, log: logging.Logger) -> None:
    """``kill@STAGE:N``: the first attempt of a STAGE task dies once it has done N frames."""
    kind, _, where = fault.partition("@")
    stage, _, frame = where.partition(":")
    if kind == "kill" and stage == drill_stage(task) and task.attempts == 1 and done >= int(frame or 0):
        log.error("fault drill: SIGKILL at frame %d of %s", done, task.label)
        kill_process()


def inject_fault(fault: str, task: TaskStatus, log: logging.Logger) -> None:
    kind, _, stage = fault.partition("@")
    if not kind or kind == "kill" or stage != drill_stage(task):
        return
    if kind == "exit":
        log.error("fault drill: the worker process exits now")
        os._exit(70)
    if kind == "oom" and task.lighter == 0:
        raise InjectedFault("CUDA out of memory (fault drill): tried to allocate 2.00 GiB")
    if kind == "crash":
        raise InjectedFault(f"fault drill: {task.stage} crashes")
