"""Why a task failed decides what happens next: the failure classes of ``schemas.task``."""

from __future__ import annotations

import sqlite3
import sys

import psycopg
import redis.exceptions
from billiard.exceptions import WorkerLostError
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerUnavailable
from sqlalchemy.exc import InterfaceError, OperationalError

from schemas.task import FailureClass
from workers.io.plate import PlateError


class InjectedFault(RuntimeError):
    """A failure asked for by ``MATTEFARM_FAULT`` (fire drills and fault tests)."""


class ModelsUnavailable(RuntimeError):
    """This worker's models would not load (no checkpoints, a broken CUDA): the node's fault, not
    the job's. The worker marks itself unhealthy and the task goes back uncounted."""


# The farm's fault, not the task's: the database or broker went away, a connection broke, the
# pool lost its child. ConnectionError covers BrokenPipeError and the other socket errors; the
# drivers' own errors come through when they are raised outside SQLAlchemy or kombu.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    sqlite3.OperationalError,
    sqlite3.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    BrokerUnavailable,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    WorkerLostError,
)


def is_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # only a worker whose models imported torch can run out of GPU memory
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower() and "cuda" in str(exc).lower()


def classify(exc: BaseException) -> FailureClass:
    if isinstance(exc, SoftTimeLimitExceeded):
        return FailureClass.TIME_LIMIT
    if isinstance(exc, PlateError | FileNotFoundError | PermissionError):
        return FailureClass.FATAL  # the plate or a path is wrong: another attempt reads the same files
    if is_out_of_memory(exc):
        return FailureClass.OUT_OF_MEMORY
    if isinstance(exc, (*INFRASTRUCTURE_ERRORS, ModelsUnavailable)):
        return FailureClass.INFRASTRUCTURE
    return FailureClass.RETRYABLE


def describe(exc: BaseException) -> str:
    if isinstance(exc, PlateError):
        return f"{exc.field}: {exc.message}"
    if isinstance(exc, SoftTimeLimitExceeded):
        return "the task ran past MATTEFARM_TASK_SOFT_TIME_LIMIT_S; use smaller tasks (task_frames) or a longer limit"
    return f"{type(exc).__name__}: {exc}"
