"""The job contract: what a submission names and what status reads back."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.frames import FrameRangeError, parse_frame_range


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSING = "pausing"  # pause asked; running tasks finish their chunk, nothing new starts
    PAUSED = "paused"
    CANCELING = "canceling"  # cancel asked; the worker stops between frames
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)


class StageName(StrEnum):
    DETECT = "detect"
    SEGMENT = "segment"
    TRACK = "track"
    EXPORT = "export"


STAGE_ORDER: tuple[StageName, ...] = (StageName.DETECT, StageName.SEGMENT, StageName.TRACK, StageName.EXPORT)


class Strategy(StrEnum):
    """How layers keep their identity across the shot (all run through the same stages)."""

    FARM = "farm"  # windows forward then backward, one identity book, hysteresis
    KEYFRAME_GREEDY = "keyframe-greedy"  # Grounded-SAM-2 continuous-ID: keyframes, first match, forward
    PER_FRAME = "per-frame"  # no tracking: per-frame masks linked by IoU


class EdgeMode(StrEnum):
    """How mattes are brought from the inference frames to the plate."""

    AUTO = "auto"  # guided where the plate is at least 1.5× the inference frames, else upsample
    GUIDED = "guided"  # upsample, then colour unmixing and a guided filter in the boundary band
    FILTER = "filter"  # upsample, then the guided filter alone (no colour unmixing)
    UPSAMPLE = "upsample"  # bilinear upsampling of the logits only


class TrackingMode(StrEnum):
    """How the farm strategy carries layers through a pass."""

    WINDOWS = "windows"  # a fresh SAM2 window of window_frames from every refresh (the reference)
    SWEEP = "sweep"  # one SAM2 pass per direction, prompted again at every refresh


class DetectMode(StrEnum):
    """Where the detector runs (farm strategy)."""

    EVERY = "every"  # every frame
    REFRESH = "refresh"  # only where a tracking pass refreshes its layers, the only frames that decide identities


class MissingFrames(StrEnum):
    REFUSE = "refuse"
    SKIP = "skip"


class StageState(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class PipelineOptions(BaseModel):
    """Pipeline knobs; defaults are Image Engine's published ones where they exist."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Field(Strategy.FARM, description="farm, keyframe-greedy or per-frame.")
    max_side: int = Field(1024, ge=64, le=8192, description="Longest side of the inference frames, px.")
    # detection
    box_threshold: float = Field(0.35, ge=0.0, le=1.0, description="Detector box score threshold.")
    text_threshold: float = Field(0.25, ge=0.0, le=1.0, description="Detector text-token threshold.")
    max_detections: int = Field(50, ge=1, le=900, description="Best-scoring boxes kept per frame.")
    detect: DetectMode = Field(
        DetectMode.EVERY,
        description="every: detect and segment every frame; refresh (farm strategy): only the frames where a "
        "tracking pass refreshes its layers (every refresh_every-th, and the last), the only frames whose "
        "detections decide identities; tracked masks fill the rest.",
    )
    # per-frame clean-up
    min_island_px: int = Field(64, ge=0, description="Mask islands smaller than this (working px) are dropped.")
    min_hole_px: int = Field(64, ge=0, description="Holes smaller than this (working px) are filled.")
    min_mask_px: int = Field(16, ge=0, description="Masks smaller than this after clean-up are dropped.")
    fp_sim: float = Field(0.1, gt=0.0, le=1.0, description="Sim(A,B) that counts B as a partner of A.")
    fp_min_partners: int = Field(2, ge=1, description="A mask with this many partners is a false positive.")
    merge_sim: float = Field(0.6, gt=0.0, le=1.0, description="Sim(A,B) above which A merges into its one partner.")
    # tracking
    # "chunk" is a task's frame range (task_frames); a tracking window is a window. The option's
    # old name, chunk_size, is still read so submissions scripted against it keep working.
    window_frames: int = Field(
        20,
        ge=2,
        le=500,
        validation_alias=AliasChoices("window_frames", "chunk_size"),
        description="Frames per tracking window (formerly chunk_size).",
    )
    refresh_every: int = Field(5, ge=1, le=500, description="A tracking window starts every N frames.")
    tracking: TrackingMode = Field(
        TrackingMode.WINDOWS,
        description="farm strategy: windows (a fresh window of window_frames from every refresh, each frame "
        "tracked about 2 × window_frames / refresh_every times) or sweep (one pass each way that keeps SAM2's "
        "memory and takes the same refresh prompts, each frame tracked about twice; measured 2.7-2.9x faster on "
        "CPU with detect refresh, same identities, mean J 0.01-0.03 lower on the synthetic suite).",
    )
    match_iou: float = Field(0.9, gt=0.0, le=1.0, description="IoU at which a detection refreshes a layer.")
    new_layer_max_cover: float = Field(
        0.2, gt=0.0, le=1.0, description="A detection covered less than this by layers starts a new one."
    )
    hysteresis: float = Field(0.1, ge=0.0, le=1.0, description="Quality margin to replace a cached mask.")
    max_empty_windows: int = Field(2, ge=0, description="Window starts a layer may miss before it ends.")
    max_unsupported_windows: int = Field(
        4,
        ge=0,
        le=1000,
        description="Window starts in a row a layer may be carried by the tracker alone, with no detection "
        "of its label behind it, before it goes dormant (a ghost layer ends).",
    )
    min_detected_frames: int = Field(3, ge=0, description="Frames a detection must confirm a layer on.")
    max_gap_frames: int = Field(
        10,
        ge=0,
        le=500,
        description="A layer missing for at most this many frames between frames it is on is tracked "
        "again across the gap, and past its first and last frame as far while the tracker finds it (0: never).",
    )
    reentry: bool = Field(
        True, description="Continue a layer when its object comes back after leaving frame (farm strategy)."
    )
    reentry_similarity: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="Appearance similarity (0-1) at which a new layer is taken for an earlier one come back.",
    )
    min_layer_frames: int = Field(1, ge=1, description="Shortest layer kept, in frames.")
    ghost_still_frames: int = Field(
        5,
        ge=0,
        le=1000,
        description="Frames a layer's mask may stay still at its start or end with no detection of its label "
        "behind it before those frames are cut as a ghost (the object had left or not yet entered); 0 keeps them.",
    )
    keyframe_step: int = Field(20, ge=1, le=500, description="keyframe-greedy: frames between keyframes.")
    keyframe_iou: float = Field(0.8, gt=0.0, le=1.0, description="keyframe-greedy: first-match IoU.")
    link_iou: float = Field(0.5, gt=0.0, le=1.0, description="per-frame: IoU that links a mask to a layer.")
    # export
    edges: EdgeMode = Field(
        EdgeMode.AUTO,
        description="auto, guided, filter or upsample: refine matte edges at plate resolution, guided by the plate.",
    )
    edge_eps: float = Field(
        1e-3,
        gt=0.0,
        le=1.0,
        description="Guided filter regularisation: smaller follows the plate's colour edges more closely.",
    )
    steady_frames: int | None = Field(
        None,
        ge=0,
        le=4,
        description="Neighbours on each side whose flow-warped mattes steady each frame's; 0 turns it off. "
        "Default (null): 2 where edges are not refined at plate resolution, 0 where they are (measured: it "
        "lifts J where mattes are written at inference size, and adds nothing after edge refinement).",
    )

    @model_validator(mode="after")
    def _refresh_within_window(self) -> PipelineOptions:
        if self.refresh_every > self.window_frames:
            raise ValueError("options.refresh_every must not exceed options.window_frames")
        if self.detect == DetectMode.REFRESH and self.strategy != Strategy.FARM:
            raise ValueError("options.detect 'refresh' needs the farm strategy (the others link detections per frame)")
        return self


MAX_CLASSES = 32  # GroundingDINO's text context holds about this many short phrases
MAX_CLASS_CHARS = 64


class JobSpec(BaseModel):
    """A submission: one plate, one prompt, one output root."""

    model_config = ConfigDict(extra="forbid")

    plate: str = Field(
        ...,
        min_length=1,
        max_length=4096,
        description="Frame-sequence pattern: /path/sh010_plate.####.exr, %04d or $F4.",
    )
    frames: str | None = Field(
        None, max_length=1000, description="Frame range like 1001-1100; default: the frames on disk."
    )
    on_missing_frames: MissingFrames = Field(
        MissingFrames.REFUSE, description="Frames of the range not on disk: 'refuse' the job, or 'skip' and list them."
    )
    plate_part: str | None = Field(
        None, max_length=256, description="Multi-part EXR: the part to read (default: first RGB)."
    )
    colourspace: str | None = Field(
        None,
        max_length=128,
        description="Plate colour space (an OCIO name, or acescg, linear, srgb, cineon); default by header and format.",
    )
    prompt: str = Field(
        ...,
        max_length=2000,
        description="Comma-separated classes, e.g. 'person, car' (at most 32 classes of at most 64 characters).",
    )
    output_root: str = Field(..., min_length=1, max_length=4096, description="Folder under an allowed write root.")
    priority: int = Field(50, ge=0, le=100, description="0 lowest, 100 highest.")
    show: str | None = Field(None, max_length=64)
    shot: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    options: PipelineOptions = Field(default_factory=PipelineOptions)
    notify_url: str | None = Field(
        None, max_length=2000, description="Webhook: POSTed the job's summary when it finishes (any outcome)."
    )
    task_frames: int | None = Field(
        None, ge=1, le=10000, description="Frames per task (chunk) for detect, segment and export; default: farm's."
    )
    min_gpu_memory_gb: float | None = Field(
        None, ge=0, le=1024, description="Send this job's GPU tasks only to workers with at least this much."
    )
    allow_smaller_model: bool = Field(
        False, description="After a GPU out-of-memory, a retry may use the next smaller SAM2."
    )

    @field_validator("notify_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None
        parsed = urlsplit(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                "notify_url must be an http:// or https:// URL with a host, e.g. https://hooks.example/roto"
            )
        return url.strip()

    @field_validator("plate", "frames", "plate_part", "colourspace", "prompt", "output_root", "show", "notify_url")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # A NUL or another control character is never part of a path, a class or a name (and
        # PostgreSQL refuses NUL in text): say so here instead of failing deep in the farm.
        if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("contains a control character (e.g. NUL); remove it")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_has_classes(cls, prompt: str) -> str:
        classes = split_prompt(prompt)
        if not classes:
            raise ValueError("prompt is empty; name one or more classes, e.g. 'person, car'")
        if len(classes) > MAX_CLASSES:
            raise ValueError(f"{len(classes)} classes; at most {MAX_CLASSES} per job (split the prompt over jobs)")
        long = next((c for c in classes if len(c) > MAX_CLASS_CHARS), None)
        if long is not None:
            raise ValueError(f"class {long[:40]!r}… is over {MAX_CLASS_CHARS} characters; name it in a few words")
        return ", ".join(classes)

    @field_validator("frames")
    @classmethod
    def _frames_parse(cls, frames: str | None) -> str | None:
        if frames is None or not frames.strip():
            return None
        try:
            parse_frame_range(frames)
        except FrameRangeError as exc:
            raise ValueError(str(exc)) from None
        return frames.strip()

    @property
    def classes(self) -> list[str]:
        return split_prompt(self.prompt)


def split_prompt(prompt: str) -> list[str]:
    """'Person, car,, person' -> ['person', 'car']: lower-case, unique, in order."""
    seen: list[str] = []
    for raw in prompt.replace(".", ",").split(","):
        name = " ".join(raw.strip().lower().split())
        if name and name not in seen:
            seen.append(name)
    return seen


class StageStatus(BaseModel):
    name: StageName
    state: StageState
    frames_done: int
    frames_total: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float | None = None


class LayerInfo(BaseModel):
    id: int = Field(description="The layer's id in the job's tracking scratch.")
    name: str
    label: str
    first_frame: int
    last_frame: int
    frames: int
    mean_score: float


class Counters(BaseModel):
    """Model calls and work done, per job."""

    model_config = ConfigDict(extra="allow")

    detector_calls: int = 0
    image_encoder_passes: int = 0
    mask_decoder_calls: int = 0
    tracking_steps: int = 0
    frames_read: int = 0
    frames_written: int = 0


class ModelsUsed(BaseModel):
    backend: str
    weights: str
    detector: str
    segmenter: str
    device: str
    checkpoints: dict[str, str] = Field(default_factory=dict, description="file -> sha256, or 'random'")


class JobHeader(BaseModel):
    """What every view of a job shows: who, what shot, where it stands."""

    id: str
    state: JobState
    user: str
    show: str | None
    shot: str
    priority: int
    version: int = Field(description="The output version the job writes (v001 = 1).")
    created_at: datetime
    finished_at: datetime | None = None


class ReviewLinks(BaseModel):
    """Review media for dailies: file paths and the API links that serve them."""

    movie: str
    contact_sheet: str
    movie_url: str | None = None
    contact_sheet_url: str | None = None


class SignedReviewLinks(BaseModel):
    """Links to a job's review media that open without a token header, until ``expires_at``."""

    movie_url: str
    contact_sheet_url: str
    expires_at: datetime


class JobStatus(JobHeader):
    spec: JobSpec
    frames: list[int] = Field(description="Plate frames the job covers.")
    missing_frames: list[int] = Field(default_factory=list, description="Requested frames not on disk (skipped).")
    stages: list[StageStatus]
    counters: Counters
    models: ModelsUsed | None = None
    warnings: list[str] = Field(default_factory=list)
    error: str | None = None
    attempts: int = 0
    output_dir: str
    output_pattern: str
    manifest: str | None = None
    review: ReviewLinks | None = None
    layers: list[LayerInfo] = Field(default_factory=list)
    started_at: datetime | None = None
    seconds: float | None = None


class JobSummary(JobHeader):
    prompt: str
    frames_done: int = Field(
        description="Plate frames delivered: their mattes are written (the export stage's frames)."
    )
    frames_total: int = Field(description="Plate frames in the job.")
    progress: float = Field(0.0, description="Share of the job's stage work done, 0..1 (every stage counts).")
    eta_s: float | None = Field(None, description="Seconds left at the rate so far (running jobs).")
    tasks: dict[str, int] = Field(default_factory=dict, description="Task count by state.")
    error: str | None = None


# What the job list sorts by (newest first unless asked otherwise).
JobSort = Literal["created", "priority", "state", "user", "show", "shot", "finished"]


class JobPage(BaseModel):
    items: list[JobSummary]
    total: int
    offset: int
    limit: int
    states: dict[str, int] = Field(
        default_factory=dict, description="Jobs by state under the other filters (the state filter left out)."
    )


class SubmitResponse(BaseModel):
    id: str
    state: JobState
    version: int
    output_dir: str
    replayed: bool = Field(False, description="True: the Idempotency-Key was seen before; this is that job.")
    warnings: list[str] = Field(default_factory=list)
