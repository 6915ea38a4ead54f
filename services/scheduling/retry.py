"""What a failed attempt leads to: the retry policy, separate from who applies it."""

from __future__ import annotations

import random
from dataclasses import dataclass

from schemas.task import FailureClass, TaskState


@dataclass(frozen=True)
class RetryPolicy:
    backoff_s: float = 10.0  # first retry waits this long, doubling per attempt
    backoff_max_s: float = 600.0
    jitter: float = 0.2  # ± share, so a failed batch does not come back in lockstep

    def delay(self, attempt: int) -> float:
        base = min(self.backoff_max_s, self.backoff_s * 2.0 ** max(0, attempt - 1))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


@dataclass(frozen=True)
class AfterFailure:
    state: TaskState
    counted: bool  # does this attempt count towards the limit
    delay_s: float = 0.0
    lighter: bool = False
    why: str = ""


def after_failure(failure: FailureClass, attempts: int, max_attempts: int, policy: RetryPolicy) -> AfterFailure:
    """``attempts`` already includes the one that failed (it is counted when the task starts)."""
    if failure == FailureClass.INFRASTRUCTURE:
        return AfterFailure(TaskState.WAITING, counted=False, why="the farm's fault, not counted")
    if failure == FailureClass.FATAL:
        return AfterFailure(TaskState.DEAD, counted=True, why="fatal: retrying cannot help")
    if failure == FailureClass.TIME_LIMIT:
        return AfterFailure(
            TaskState.DEAD, counted=True, why="over the time limit: split it (task_frames) or raise the limit"
        )
    if attempts >= max_attempts:
        return AfterFailure(TaskState.DEAD, counted=True, why=f"dead after {attempts} of {max_attempts} attempts")
    lighter = failure == FailureClass.OUT_OF_MEMORY
    why = f"attempt {attempts} of {max_attempts} failed; retrying" + (" with lighter settings" if lighter else "")
    return AfterFailure(TaskState.RETRYING, counted=True, delay_s=policy.delay(attempts), lighter=lighter, why=why)
