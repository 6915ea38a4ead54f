"""Why a task failed decides what happens next: the failure classes of ``schemas.task``."""

from __future__ import annotations

from schemas.task import FailureClass
from workers.io.plate import PlateError


class InjectedFault(RuntimeError):
    """A failure asked for by ``MATTEFARM_FAULT`` (fire drills and fault tests)."""


_INFRASTRUCTURE_NAMES = {
    # by name, so the worker need not import every client library to recognise its errors
    "OperationalError",  # sqlalchemy / kombu: the database or broker went away
    "InterfaceError",
    "ConnectionError",
    "BrokenPipeError",
    "TimeoutError",
    "WorkerLostError",
}


def is_out_of_memory(exc: BaseException) -> bool:
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower() and "cuda" in str(exc).lower()


def classify(exc: BaseException) -> FailureClass:
    if isinstance(exc, PlateError | FileNotFoundError | PermissionError):
        return FailureClass.FATAL  # the plate or a path is wrong: another attempt reads the same files
    if is_out_of_memory(exc):
        return FailureClass.OUT_OF_MEMORY
    if any(cls.__name__ in _INFRASTRUCTURE_NAMES for cls in type(exc).__mro__):
        return FailureClass.INFRASTRUCTURE
    return FailureClass.RETRYABLE


def describe(exc: BaseException) -> str:
    if isinstance(exc, PlateError):
        return f"{exc.field}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
