"""Fire drills (``MATTEFARM_FAULT``): make a stage's task crash, run out of memory, or kill its
worker process, so operators and the fault tests see the farm recover."""

from __future__ import annotations

import logging
import os

from schemas.task import TaskStatus
from workers.runtime.failures import InjectedFault


def inject_fault(fault: str, task: TaskStatus, log: logging.Logger) -> None:
    kind, _, stage = fault.partition("@")
    if not kind or stage != task.stage:
        return
    if kind == "exit":
        log.error("fault drill: the worker process exits now")
        os._exit(70)
    if kind == "oom" and task.lighter == 0:
        raise InjectedFault("CUDA out of memory (fault drill): tried to allocate 2.00 GiB")
    if kind == "crash":
        raise InjectedFault(f"fault drill: {task.stage} crashes")
