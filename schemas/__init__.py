"""The typed contract between the API, the CLI/client and the workers."""

from schemas.errors import ErrorBody, FieldProblem
from schemas.events import Event, EventKind
from schemas.frames import FrameRangeError, format_frame_range, parse_frame_range
from schemas.job import (
    STAGE_ORDER,
    Counters,
    JobHeader,
    JobPage,
    JobSpec,
    JobState,
    JobStatus,
    JobSummary,
    LayerInfo,
    MissingFrames,
    ModelsUsed,
    PipelineOptions,
    ReviewLinks,
    StageName,
    StageState,
    StageStatus,
    Strategy,
    SubmitResponse,
    split_prompt,
)
from schemas.worker import FarmOverview, QueueInfo, WorkerInfo

__all__ = [
    "STAGE_ORDER",
    "Counters",
    "ErrorBody",
    "Event",
    "EventKind",
    "FarmOverview",
    "FieldProblem",
    "FrameRangeError",
    "JobHeader",
    "JobPage",
    "JobSpec",
    "JobState",
    "JobStatus",
    "JobSummary",
    "LayerInfo",
    "MissingFrames",
    "ModelsUsed",
    "PipelineOptions",
    "QueueInfo",
    "ReviewLinks",
    "StageName",
    "StageState",
    "StageStatus",
    "Strategy",
    "SubmitResponse",
    "WorkerInfo",
    "format_frame_range",
    "parse_frame_range",
    "split_prompt",
]
