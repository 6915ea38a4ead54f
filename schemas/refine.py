"""Artist refinement: the edits an artist (or a TD's script) makes to a finished job's layers, and
what the refine page reads back. Frames are the plate's frame numbers; x, y are working-resolution
pixels (the size ``RefineState.size`` gives). An edit list replays exactly: propagation is an edit.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
LayerName = Annotated[str, Field(pattern=_NAME, description="A layer, e.g. car_01.")]
Label = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9 _-]*$")]


class _Edit(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClickEdit(_Edit):
    """A positive or negative click; all clicks of a layer on a frame are one prompt."""

    kind: Literal["click"] = "click"
    layer: LayerName | None = Field(None, description="None: a new layer of `label`.")
    label: Label | None = Field(None, description="The new layer's label (when `layer` is None).")
    frame: int
    x: float
    y: float
    positive: bool = True


class BoxEdit(_Edit):
    kind: Literal["box"] = "box"
    layer: LayerName | None = None
    label: Label | None = None
    frame: int
    box: tuple[float, float, float, float] = Field(description="x0, y0, x1, y1 in working pixels.")


class BrushEdit(_Edit):
    kind: Literal["brush"] = "brush"
    layer: LayerName
    frame: int
    points: list[tuple[float, float]] = Field(min_length=1, max_length=5000)
    radius: float = Field(4.0, gt=0, le=200)
    erase: bool = False


class RenameEdit(_Edit):
    kind: Literal["rename"] = "rename"
    layer: LayerName
    to: LayerName


class DeleteEdit(_Edit):
    """A false layer goes."""

    kind: Literal["delete"] = "delete"
    layer: LayerName


class MergeEdit(_Edit):
    """``layer`` joins ``into`` (one object that left frame and came back)."""

    kind: Literal["merge"] = "merge"
    layer: LayerName
    into: LayerName


class SplitEdit(_Edit):
    """Frames from ``frame`` on become a new layer of the same label."""

    kind: Literal["split"] = "split"
    layer: LayerName
    frame: int


class PropagateEdit(_Edit):
    """Track the layer from its edited frames forward and backward (to its next edited frame, or
    until the object is lost); no other layer changes."""

    kind: Literal["propagate"] = "propagate"
    layer: LayerName


Edit = Annotated[
    ClickEdit | BoxEdit | BrushEdit | RenameEdit | DeleteEdit | MergeEdit | SplitEdit | PropagateEdit,
    Field(discriminator="kind"),
]


class EditList(BaseModel):
    """What ``mattefarm refine JOB --edits EDITS.json`` replays."""

    model_config = ConfigDict(extra="forbid")

    edits: list[Edit] = Field(max_length=10000)


class StoredEdit(BaseModel):
    id: int = Field(description="Never reused (a sequence number is, after undo and a new edit).")
    seq: int
    actor: str
    at: datetime
    edit: Edit
    undone: bool = False


class RefineLayer(BaseModel):
    name: str
    label: str
    colour: tuple[int, int, int]
    frames: list[int] = Field(description="Plate frames the layer is present on.")
    keyframes: list[int] = Field(description="Frames an artist fixed.")
    edited: bool = Field(
        description="An edit changed its masks: the next delivery makes those mattes anew (a layer only renamed or "
        "merged keeps the parent's pixels)."
    )


class Doubt(BaseModel):
    """A frame where the farm itself doubts a layer: the artist's first stops."""

    layer: str
    frame: int
    why: str


class RefineState(BaseModel):
    job_id: str
    version: int
    frames: list[int]
    size: tuple[int, int] = Field(description="Working resolution (width, height): x, y of edits.")
    layers: list[RefineLayer]
    doubts: list[Doubt]
    edits: int = Field(description="Edits in effect (undone ones excluded).")
    redo: int = Field(description="Undone edits that redo can bring back.")
    can_edit: bool
    delivered: list[int] = Field(default_factory=list, description="Versions delivered from these edits.")


class PropagationState(StrEnum):
    QUEUED = "queued"  # sent to the refine queue; waits for a worker with the tracker loaded
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # its result is stored as the edit it became
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        return self in (PropagationState.QUEUED, PropagationState.RUNNING)


class RefineProgress(BaseModel):
    """A propagation: a farm task that tracks one layer from its keyframes (the page and the
    dashboard show it; while it is open the job takes no other edit)."""

    task_id: int
    job_id: str
    layer: str
    actor: str
    state: PropagationState
    worker: str | None = None
    attempts: int = Field(0, description="Workers that started it (a worker that died is replaced).")
    frames_done: int
    frames_total: int = Field(description="Frames it may track: to each next keyframe (fewer if the object is lost).")
    running: bool = Field(description="Queued or running: the page waits, other edits are refused.")
    seconds: float = Field(description="Since it was asked for (while open), or how long it took.")
    error: str | None = None
    edit_seq: int | None = Field(None, description="The stored edit it became, once it succeeded.")
    frames_changed: list[int] = Field(default_factory=list, description="Plate frames it rewrote, once it succeeded.")
    created_at: datetime


class EditResult(BaseModel):
    seq: int | None = Field(None, description="The stored edit's sequence number (a propagation: once it has run).")
    layer: str | None = Field(None, description="The layer the edit made or changed.")
    frames_changed: list[int] = Field(default_factory=list)
    state: RefineState
    propagation: RefineProgress | None = Field(
        None, description="A propagation runs as a farm task: poll GET /jobs/{id}/refine/progress."
    )


class DeliverResult(BaseModel):
    version: int
    output_dir: str
    output_pattern: str
    manifest: str
    parent_version: int
    edits: int
    layers_rewritten: list[str]
    frames_rewritten: int
    seconds: float
