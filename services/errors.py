"""Domain errors the API maps to HTTP in one handler. Each names the field and the fix."""

from __future__ import annotations

from schemas import FieldProblem


class FarmServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, problems: list[FieldProblem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []

    @classmethod
    def on_field(cls, field: str, message: str) -> FarmServiceError:
        return cls(f"{field}: {message}", [FieldProblem(field=field, message=message)])


class InvalidSpec(FarmServiceError):
    status, code = 422, "invalid_spec"


class PathNotAllowed(FarmServiceError):
    """A path outside the allowed roots (or relative, or through a symlink out): a problem of the
    spec, named by its field, like any other (the client raises FarmInvalidSpec)."""

    status, code = 422, "path_not_allowed"


class NotAuthenticated(FarmServiceError):
    status, code = 401, "not_authenticated"


class NotAllowed(FarmServiceError):
    status, code = 403, "forbidden"


class JobNotFound(FarmServiceError):
    status, code = 404, "job_not_found"


class QueueUnavailable(FarmServiceError):
    status, code = 503, "queue_unavailable"


class JobNotReady(FarmServiceError):
    status, code = 409, "job_not_ready"


class RefineBusy(FarmServiceError):
    """A propagation of the job is queued or running: edits wait for it (they would change what it tracks)."""

    status, code = 409, "refine_busy"


class WrongState(FarmServiceError):
    """The action does not fit what the thing is doing now (undrain an unhealthy worker)."""

    status, code = 409, "wrong_state"


class IdempotencyConflict(FarmServiceError):
    status, code = 409, "idempotency_conflict"


class TooManyAttempts(FarmServiceError):
    status, code = 429, "too_many_attempts"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
