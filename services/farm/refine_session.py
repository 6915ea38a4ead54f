"""A refinement session: a finished job's layers at working resolution (the delivered version's
mattes), the frames as the models see them, and the stored edits replayed over them.

The API holds one per job it refines (clicks); a worker builds one to run a propagation. Both
replay the same stored edit list the same way, so both see the same layers. A stored propagation
is replayed from its kept result (``RefineTasks.result_for``), never tracked again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from farm_config.settings import Settings
from schemas import JobStatus
from schemas.refine import PropagateEdit, StoredEdit
from services.errors import JobNotReady
from services.store.refine_tasks import RefineTasks
from workers.core.masks import unpack_masks
from workers.io.plate import PlateDecoder, resolve_plate
from workers.io.sequence import SequencePattern
from workers.models.interfaces import ModelSet
from workers.pipeline.frames import FrameSource
from workers.pipeline.refine import RefineEngine, apply_edit
from workers.pipeline.refine_delivery import load_book


@dataclass
class RefineSession:
    job: JobStatus
    frames: FrameSource  # decoded on first touch, the last few kept: an artist works around a few frames
    engine: RefineEngine
    positions: dict[int, int]  # plate frame → position
    applied: int = 0  # stored edits replayed into this session
    lock: threading.Lock = field(default_factory=threading.Lock)


def open_session(job: JobStatus, settings: Settings, models: ModelSet) -> RefineSession:
    """The job's delivered layers, before any edit."""
    plate = resolve_plate(job.spec.plate, job.frames, part=job.spec.plate_part)
    decoder = PlateDecoder.configured(plate, job.spec.options.max_side, job.spec.colourspace, settings)
    if models.refiner is None or models.tracker is None:
        raise JobNotReady(f"the {models.backend} backend can't answer clicks")
    output = SequencePattern.parse(job.output_pattern)
    book = load_book(output.path_for, job.frames, {ly.name: ly.label for ly in job.layers}, decoder.size)
    positions = {frame: pos for pos, frame in enumerate(job.frames)}
    frames = FrameSource(decoder, keep=settings.refine_frames_cached, threads=0)
    return RefineSession(job, frames, RefineEngine(book, frames.at, models.refiner, models.tracker), positions)


def replay(session: RefineSession, stored: list[StoredEdit], kept: RefineTasks) -> None:
    """Apply the stored edits this session has not applied yet, first to last."""
    for edit in stored[session.applied :]:
        if not _replay_propagation(session, edit, kept):
            apply_edit(session.engine, edit.edit, session.positions)
        session.applied += 1


def _replay_propagation(session: RefineSession, stored: StoredEdit, kept: RefineTasks) -> bool:
    """Apply a stored propagation's kept result; False when there is none (track again). Edits
    are append-only behind the last one in effect, so what came before it is what it saw."""
    if not isinstance(stored.edit, PropagateEdit):
        return False
    result = kept.result_for(stored.id)
    if result is None:
        return False
    book = session.engine.book
    for pos, mask in unpack_masks(result):
        book.set_mask(stored.edit.layer, pos, mask, keyframe=False)
    return True
