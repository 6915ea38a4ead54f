"""Artist refinement of a finished job: the refine page's state and pictures, edits (with undo
and redo), and delivery of the next version.

Clicks are answered in this process from a warm model (documented in docs/refinement.md): a
session per job holds its layers at working resolution, the frames the artist touched and the
models; the encoder runs once per frame touched, never per click. A propagation is a farm task
(``refine_runner`` on a worker with the tracker loaded), sent to ``refine_queue``; while it is
open the job takes no other edit. Edits are stored first-to-last and a session is their replay
over the parent version's mattes, so edits survive a reload, another browser and an API restart,
and undo is replaying one fewer.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from farm_config.settings import Settings, TokenGrant
from schemas import EventKind, JobState, JobStatus
from schemas.refine import (
    DeliverResult,
    Doubt,
    Edit,
    EditResult,
    PropagateEdit,
    RefineLayer,
    RefineProgress,
    RefineState,
    StoredEdit,
)
from services.errors import InvalidSpec, JobNotFound, JobNotReady, NotAllowed, QueueUnavailable, RefineBusy
from services.farm.jobs import JobService
from services.farm.refine_session import RefineSession, open_session, replay
from services.store import FarmStores
from workers.core.refine import LayerBook, RefineError, doubts
from workers.io.atomic import write_json_atomic
from workers.io.review import layer_colour
from workers.io.sequence import SequencePattern
from workers.models.builder import resolve_device
from workers.pipeline.edges import edge_refiner
from workers.pipeline.export_frames import ExportFrames
from workers.pipeline.refine import apply_edit
from workers.pipeline.refine_delivery import deliver_version
from workers.runtime.model_cache import ModelCache

log = logging.getLogger(__name__)


class PropagationSender(Protocol):
    def send_propagation(self, task_id: int, queue: str) -> None: ...


class RefineService:
    def __init__(
        self, settings: Settings, stores: FarmStores, jobs: JobService, models: ModelCache, broker: PropagationSender
    ) -> None:
        self.settings, self.stores, self.jobs, self.models, self.broker = settings, stores, jobs, models, broker
        self._sessions: OrderedDict[str, RefineSession] = OrderedDict()
        self._lock = threading.Lock()

    # --- sessions ----------------------------------------------------------------------------

    def _job(self, job_id: str) -> JobStatus:
        job = self.stores.jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}; list jobs with GET /jobs")
        if job.state != JobState.SUCCEEDED:
            raise JobNotReady(f"job {job_id} is {job.state}: refine it once it has succeeded")
        return job

    def _may_edit(self, job: JobStatus, grant: TokenGrant) -> None:
        if job.user != grant.user and not grant.is_admin:
            raise NotAllowed(f"job {job.id} belongs to {job.user}; others may look but not edit")

    def session(self, job_id: str) -> RefineSession:
        job = self._job(job_id)
        with self._lock:
            session = self._sessions.get(job_id)
            if session is None:
                session = self._open(job)
                self._sessions[job_id] = session
                while len(self._sessions) > self.settings.refine_sessions:  # the least recent replays when reopened
                    self._sessions.popitem(last=False)
            self._sessions.move_to_end(job_id)
        with session.lock:
            stored = self.stores.refine_edits.active(job_id)
            if session.applied > len(stored):  # an undo elsewhere: replay from the delivered layers
                session = self._open(job)
                with self._lock:
                    self._sessions[job_id] = session
            replay(session, stored, self.stores.refine_tasks)
        return session

    def _open(self, job: JobStatus) -> RefineSession:
        return open_session(job, self.settings, self.models.get(self.settings))

    # --- reading -----------------------------------------------------------------------------

    def state(self, job_id: str, grant: TokenGrant) -> RefineState:
        session = self.session(job_id)
        return self._state(session, grant)

    def _state(self, session: RefineSession, grant: TokenGrant) -> RefineState:
        job, book = session.job, session.engine.book
        frames = job.frames
        stored = self.stores.refine_edits.all(job.id)
        return RefineState(
            job_id=job.id,
            version=job.version,
            frames=frames,
            size=(book.shape[1], book.shape[0]),
            layers=[
                RefineLayer(
                    name=name,
                    label=layer.label,
                    colour=layer_colour(name),
                    frames=[frames[p] for p in layer.present()],
                    keyframes=sorted(frames[p] for p in layer.keyframes),
                    edited=_made_anew(book, name),
                )
                for name, layer in book.layers.items()
            ],
            doubts=[Doubt(layer=name, frame=frames[pos], why=why) for name, pos, why in doubts(book)],
            edits=sum(1 for e in stored if not e.undone),
            redo=sum(1 for e in stored if e.undone),
            can_edit=job.user == grant.user or grant.is_admin,
        )

    def edits(self, job_id: str) -> list[StoredEdit]:
        self._job(job_id)
        return self.stores.refine_edits.all(job_id)

    def plate_png(self, job_id: str, frame: int) -> bytes:
        session = self.session(job_id)
        pos = self._position(session, frame)
        return _png(cv2.cvtColor(session.frames.at(pos).image, cv2.COLOR_RGB2BGR))

    def layers_png(self, job_id: str, frame: int) -> bytes:
        """The frame's layers as an index image: pixel value i is the i-th layer of the state (0: none)."""
        session = self.session(job_id)
        pos = self._position(session, frame)
        book = session.engine.book
        index = np.zeros(book.shape, np.uint8)
        for i, layer in enumerate(book.layers.values(), start=1):
            mask = layer.masks.get(pos)
            if mask is not None:
                index[mask] = min(i, 255)
        return _png(index)

    def _position(self, session: RefineSession, frame: int) -> int:
        if frame not in session.positions:
            raise JobNotFound(f"frame {frame} is not in job {session.job.id} ({session.job.frames[0]}…)")
        return session.positions[frame]

    # --- editing -----------------------------------------------------------------------------

    def apply(self, job_id: str, edit: Edit, grant: TokenGrant) -> EditResult:
        session = self.session(job_id)
        self._may_edit(session.job, grant)
        self._not_busy(job_id)
        if isinstance(edit, PropagateEdit):
            return self._propagate(session, edit, grant)
        with session.lock:
            started = time.perf_counter()
            try:
                layer, changed = apply_edit(session.engine, edit, session.positions)
            except RefineError as exc:
                self._drop(job_id)  # the session may hold half an edit: replay it next time
                raise InvalidSpec.on_field(exc.field, exc.message) from None
            stored = self.stores.refine_edits.append(job_id, grant.user, edit, time.perf_counter() - started)
            session.applied += 1
        frames = sorted(session.job.frames[p] for p in changed)
        return EditResult(seq=stored.seq, layer=layer, frames_changed=frames, state=self._state(session, grant))

    def _propagate(self, session: RefineSession, edit: PropagateEdit, grant: TokenGrant) -> EditResult:
        """Queue the propagation as a farm task; its result becomes the next stored edit."""
        job_id = session.job.id
        try:
            session.engine.book.layer(edit.layer)
        except RefineError as exc:
            raise InvalidSpec.on_field(exc.field, exc.message) from None
        task = self.stores.refine_tasks.create(job_id, edit.layer, grant.user)
        if task is None:  # another request opened one in between
            self._not_busy(job_id)
            raise RefineBusy(f"job {job_id} has a propagation open; edit once it has finished")
        try:
            self.broker.send_propagation(task.task_id, self.settings.refine_queue)
        except QueueUnavailable:
            self.stores.refine_tasks.fail(task.task_id, None, "the queue was unreachable when it was asked for")
            raise
        return EditResult(layer=edit.layer, state=self._state(session, grant), propagation=task)

    def _not_busy(self, job_id: str) -> None:
        running = self.stores.refine_tasks.open_for(job_id)
        if running is not None:
            where = f"on {running.worker}" if running.worker else f"waiting on queue {self.settings.refine_queue!r}"
            raise RefineBusy(
                f"layer {running.layer} is propagating (task {running.task_id}, {running.state} {where}, "
                f"{running.frames_done}/{running.frames_total} frames): edit once it has finished"
            )

    def propagations(self, limit: int = 20) -> list[RefineProgress]:
        """Farm-wide: the open propagations, then the latest finished ones."""
        return self.stores.refine_tasks.recent(limit)

    def progress(self, job_id: str) -> RefineProgress | None:
        """The job's open propagation, else its last one."""
        self._job(job_id)
        return self.stores.refine_tasks.latest(job_id)

    def undo(self, job_id: str, grant: TokenGrant) -> RefineState:
        job = self._job(job_id)
        self._may_edit(job, grant)
        self._not_busy(job_id)
        if self.stores.refine_edits.undo(job_id) is None:
            raise InvalidSpec.on_field("undo", "nothing to undo")
        self._drop(job_id)
        return self.state(job_id, grant)

    def redo(self, job_id: str, grant: TokenGrant) -> RefineState:
        job = self._job(job_id)
        self._may_edit(job, grant)
        self._not_busy(job_id)
        if self.stores.refine_edits.redo(job_id) is None:
            raise InvalidSpec.on_field("redo", "nothing to redo")
        return self.state(job_id, grant)

    def _drop(self, job_id: str) -> None:
        with self._lock:
            self._sessions.pop(job_id, None)

    # --- delivery ----------------------------------------------------------------------------

    def deliver(self, job_id: str, grant: TokenGrant) -> DeliverResult:
        """The next version, beside the parent's: unedited layers copied, edited ones made anew."""
        session = self.session(job_id)
        job = session.job
        self._may_edit(job, grant)
        self._not_busy(job_id)
        edits = [e.edit for e in self.stores.refine_edits.active(job_id)]
        if not edits:
            raise InvalidSpec.on_field("edits", "nothing to deliver: this job has no edits")
        started = time.monotonic()
        parent_dir = Path(job.output_dir)
        version, version_dir = self.jobs.reserve_version(job.shot, parent_dir.parent)
        parent_pattern = SequencePattern.parse(job.output_pattern)
        padding = max(4, parent_pattern.padding)
        stem = f"{job.shot}_roto_v{version:03d}"
        output = SequencePattern.parse(str(version_dir / f"{stem}.{'#' * padding}.exr"))
        book = session.engine.book
        header = {
            "mattefarm/job": f"{job.id}/refine/v{version:03d}",
            "mattefarm/parentVersion": str(job.version),
            "mattefarm/parentJob": job.id,
            "mattefarm/edits": str(len(edits)),
            "mattefarm/refinedBy": grant.user,
        }
        decoder, options = session.frames.decoder, job.spec.options
        plate_size = (decoder.plate.width, decoder.plate.height)
        edges = edge_refiner(
            options.edges, options.edge_eps, plate_size, decoder.size, resolve_device(self.settings.device)
        )
        plate = ExportFrames(decoder, job.frames)
        try:
            with session.lock:
                written, rewritten = deliver_version(
                    book,
                    job.frames,
                    parent_pattern.path_for,
                    output.path_for,
                    header,
                    edges=edges,
                    guide_for=plate.guide,
                )
                manifest = version_dir / f"{stem}.json"
                write_json_atomic(
                    manifest,
                    {
                        "job": job.id,
                        "shot": job.shot,
                        "version": version,
                        "parent_version": job.version,
                        "parent_output": job.output_pattern,
                        "refined_by": grant.user,
                        "edits": [e.model_dump(mode="json") for e in edits],
                        "layers": {
                            name: sorted(job.frames[p] for p in ly.present()) for name, ly in book.layers.items()
                        },
                        "renamed": dict(book.renamed),
                        "frames": [p.name for p in written],
                    },
                )
        except BaseException:
            shutil.rmtree(version_dir, ignore_errors=True)  # never leave a half or empty version
            raise
        edited = sorted(n for n in book.layers if _made_anew(book, n))
        seconds = time.monotonic() - started
        self.stores.jobs.add_event(
            job.id,
            EventKind.NOTIFIED,
            grant.user,
            f"refined v{version:03d} delivered from {len(edits)} edit(s): {', '.join(edited) or 'layer operations'}",
        )
        return DeliverResult(
            version=version,
            output_dir=str(version_dir),
            output_pattern=output.display,
            manifest=str(manifest),
            parent_version=job.version,
            edits=len(edits),
            layers_rewritten=edited,
            frames_rewritten=rewritten,
            seconds=round(seconds, 3),
        )


def _made_anew(book: LayerBook, name: str) -> bool:
    """The next delivery makes some of this layer's mattes from masks (a renamed or merged layer
    whose masks no edit touched is copied from the parent, pixel for pixel)."""
    return bool(book.changed.get(name)) or not book.layers[name].sources


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("could not encode a PNG")
    return data.tobytes()
