"""How a job's frames split into tasks: contiguous chunks per stage."""

from __future__ import annotations

from dataclasses import dataclass

from schemas import STAGE_ORDER, StageName
from schemas.task import TaskKind

# Tracking carries identities across the whole shot, so it is one task; the other stages work
# frame by frame and split into chunks that several workers can run at once.
WHOLE_SHOT_STAGES = frozenset({StageName.TRACK})
GPU_STAGES = frozenset({StageName.DETECT, StageName.SEGMENT, StageName.TRACK})


@dataclass(frozen=True)
class TaskPlan:
    stage: StageName
    position: int
    index: int
    kind: TaskKind
    first_pos: int
    end_pos: int  # exclusive
    first_frame: int
    last_frame: int

    @property
    def frames(self) -> int:
        return self.end_pos - self.first_pos


def chunk_bounds(count: int, size: int) -> list[tuple[int, int]]:
    """[start, end) chunks of at most ``size``, sizes differing by at most one."""
    if count <= 0:
        return []
    chunks = -(-count // max(1, size))
    base, extra = divmod(count, chunks)
    bounds, start = [], 0
    for i in range(chunks):
        end = start + base + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def plan_tasks(frames: list[int], task_frames: int) -> list[TaskPlan]:
    """Every task of a job, in pipeline order. Export ends with a finalise task (review, manifest)."""
    plans: list[TaskPlan] = []
    for position, stage in enumerate(STAGE_ORDER):
        size = len(frames) if stage in WHOLE_SHOT_STAGES else task_frames
        bounds = chunk_bounds(len(frames), size)
        for index, (start, end) in enumerate(bounds):
            plans.append(TaskPlan(stage, position, index, TaskKind.FRAMES, start, end, frames[start], frames[end - 1]))
        if stage == StageName.EXPORT and frames:
            plans.append(
                TaskPlan(stage, position, len(bounds), TaskKind.FINALISE, 0, len(frames), frames[0], frames[-1])
            )
    return plans


def is_gpu_stage(stage: StageName | str) -> bool:
    return StageName(stage) in GPU_STAGES
