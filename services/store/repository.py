"""Job records: every read and write of jobs, stages and events goes through here.

State changes are compare-and-set (``UPDATE … WHERE state IN (expected)``): zero rows
updated means another process won the race, and the caller is told so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from schemas import (
    STAGE_ORDER,
    Counters,
    Event,
    EventKind,
    JobPage,
    JobSpec,
    JobState,
    JobStatus,
    JobSummary,
    LayerInfo,
    ModelsUsed,
    ReviewLinks,
    StageName,
    StageState,
    StageStatus,
    parse_frame_range,
)
from services.store.db import Database
from services.store.tables import EventRow, JobRow, StageRow, utcnow


class Claim(StrEnum):
    RUN = "run"
    ALREADY_FINAL = "already_final"
    CANCELED = "canceled"
    GAVE_UP = "gave_up"
    MISSING = "missing"


@dataclass(frozen=True)
class JobFilter:
    state: JobState | None = None
    show: str | None = None
    shot: str | None = None
    user: str | None = None


@dataclass
class FarmSnapshot:
    jobs: dict[str, int]  # state -> count
    stages: dict[tuple[str, str], int]  # (stage, state) -> count
    oldest_queued_at: datetime | None
    waits: list[float]  # seconds from submission to a worker starting, recent jobs
    retries: int  # attempts beyond the first, recent jobs
    counters: list[dict[str, int]]  # recent jobs' model-call counters
    stage_times: list[tuple[str, float, int]]  # (stage, seconds, frames) of recent finished stages


@dataclass(frozen=True)
class NewJob:
    id: str
    spec: JobSpec
    user: str
    shot: str
    frames: list[int]
    version: int
    output_dir: str
    output_pattern: str
    warnings: list[str]


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- submission and queries -------------------------------------------------------------

    def create(self, job: NewJob) -> None:
        with self.db.session() as s:
            row = JobRow(
                id=job.id,
                state=JobState.QUEUED,
                user=job.user,
                show=job.spec.show,
                shot=job.shot,
                priority=job.spec.priority,
                prompt=job.spec.prompt,
                spec=job.spec.model_dump(mode="json"),
                frames=job.frames,
                version=job.version,
                output_dir=job.output_dir,
                output_pattern=job.output_pattern,
                counters={},
                layers=[],
                warnings=job.warnings,
                attempts=0,
                cancel_requested=False,
                created_at=utcnow(),
            )
            row.stages = [
                StageRow(name=name, position=i, state=StageState.WAITING, frames_done=0, frames_total=len(job.frames))
                for i, name in enumerate(STAGE_ORDER)
            ]
            s.add(row)
            s.flush()  # the job row must exist before its first event
            s.add(
                _event(job.id, EventKind.SUBMITTED, job.user, f"{len(job.frames)} frames, prompt '{job.spec.prompt}'")
            )

    def get(self, job_id: str) -> JobStatus | None:
        with self.db.session() as s:
            row = s.get(JobRow, job_id, options=[selectinload(JobRow.stages)])
            return _status(row) if row else None

    def owner(self, job_id: str) -> str | None:
        with self.db.session() as s:
            return s.scalar(select(JobRow.user).where(JobRow.id == job_id))

    def list(self, where: JobFilter, offset: int, limit: int) -> JobPage:
        with self.db.session() as s:
            query = select(JobRow)
            for column, value in (
                (JobRow.state, where.state),
                (JobRow.show, where.show),
                (JobRow.shot, where.shot),
                (JobRow.user, where.user),
            ):
                if value is not None:
                    query = query.where(column == value)
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(
                query.options(selectinload(JobRow.stages))
                .order_by(JobRow.created_at.desc(), JobRow.id)
                .offset(offset)
                .limit(limit)
            ).all()
            return JobPage(items=[_summary(r) for r in rows], total=total, offset=offset, limit=limit)

    def events(self, job_id: str) -> list[Event]:
        with self.db.session() as s:
            rows = s.scalars(select(EventRow).where(EventRow.job_id == job_id).order_by(EventRow.id)).all()
            return [Event(at=r.at, kind=EventKind(r.kind), actor=r.actor, message=r.message) for r in rows]

    def next_version(self, output_dir_prefix: str) -> int:
        """Highest version recorded for a shot's roto folder (0 when none)."""
        with self.db.session() as s:
            query = select(JobRow.version).where(JobRow.output_dir.startswith(output_dir_prefix, autoescape=True))
            rows = s.scalars(query).all()
            return max(rows, default=0)

    def add_event(self, job_id: str, kind: EventKind, actor: str, message: str) -> None:
        with self.db.session() as s:
            s.add(_event(job_id, kind, actor, message))

    def farm_snapshot(self, recent_days: float = 7.0) -> FarmSnapshot:
        """Counts by state (all jobs) and timings of recent jobs, for ``/metrics``."""
        since = utcnow() - timedelta(days=recent_days)
        with self.db.session() as s:
            jobs = {state: n for state, n in s.execute(select(JobRow.state, func.count()).group_by(JobRow.state))}
            stages = {
                (name, state): n
                for name, state, n in s.execute(
                    select(StageRow.name, StageRow.state, func.count()).group_by(StageRow.name, StageRow.state)
                )
            }
            oldest = s.scalar(select(func.min(JobRow.created_at)).where(JobRow.state == JobState.QUEUED))
            recent = s.execute(
                select(JobRow.created_at, JobRow.started_at, JobRow.attempts, JobRow.counters).where(
                    JobRow.created_at >= since
                )
            ).all()
            stage_times = s.execute(
                select(StageRow.name, StageRow.seconds, StageRow.frames_done)
                .join(JobRow, JobRow.id == StageRow.job_id)
                .where(JobRow.created_at >= since, StageRow.state == StageState.SUCCEEDED)
            ).all()
        return FarmSnapshot(
            jobs=jobs,
            stages=stages,
            oldest_queued_at=_aware(oldest),
            waits=[(_aware(st) - _aware(ct)).total_seconds() for ct, st, _, _ in recent if st is not None],
            retries=sum(max(0, attempts - 1) for _, _, attempts, _ in recent),
            counters=[dict(c or {}) for _, _, _, c in recent],
            stage_times=[(name, sec, frames) for name, sec, frames in stage_times if sec is not None],
        )

    # --- control ----------------------------------------------------------------------------

    def cancel_queued(self, job_id: str, actor: str, reason: str | None) -> bool:
        """Close a job that has not started; True only for the call that closed it."""
        why = f": {reason}" if reason else ""
        with self.db.session() as s:
            done = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == JobState.QUEUED)
                .values(state=JobState.CANCELED, cancel_requested=True, finished_at=utcnow())
            ).rowcount
            if done:
                _set_open_stages(s, job_id, StageState.CANCELED)
                s.add(_event(job_id, EventKind.CANCELED, actor, f"canceled before it started{why}"))
            return bool(done)

    def request_cancel(self, job_id: str, actor: str, reason: str | None) -> JobState:
        """Cancel a queued job at once; ask a running one to stop. Returns the new state."""
        if self.cancel_queued(job_id, actor, reason):
            return JobState.CANCELED
        why = f": {reason}" if reason else ""
        with self.db.session() as s:
            done = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == JobState.RUNNING)
                .values(state=JobState.CANCELING, cancel_requested=True)
            ).rowcount
            if done:
                s.add(_event(job_id, EventKind.CANCEL_REQUESTED, actor, f"cancel requested{why}"))
                return JobState.CANCELING
            state = s.scalar(select(JobRow.state).where(JobRow.id == job_id))
            return JobState(state)

    # --- worker side ------------------------------------------------------------------------

    def claim(self, job_id: str, worker: str, max_attempts: int) -> Claim:
        """Mark the job running for this attempt. A redelivered message (worker died) finds the
        job still ``running`` and claims it again; the attempt cap stops crash loops."""
        with self.db.session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                return Claim.MISSING
            if row.state in (JobState.CANCELING,) or row.cancel_requested:
                return Claim.CANCELED
            if JobState(row.state).is_final:
                return Claim.ALREADY_FINAL
            previous = row.attempts  # the UPDATE below refreshes ``row``
            if previous >= max_attempts:
                return Claim.GAVE_UP
            claimed = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_([JobState.QUEUED, JobState.RUNNING]))
                .where(JobRow.attempts == previous)
                .values(state=JobState.RUNNING, attempts=previous + 1, started_at=utcnow(), error=None)
            ).rowcount
            if not claimed:
                return Claim.ALREADY_FINAL
            if previous:
                s.add(_event(job_id, EventKind.RETRY, worker, f"attempt {previous + 1} of {max_attempts}"))
            s.add(_event(job_id, EventKind.STARTED, worker, f"attempt {previous + 1} started"))
            # A retry starts its stages afresh.
            s.execute(
                update(StageRow)
                .where(StageRow.job_id == job_id)
                .values(state=StageState.WAITING, frames_done=0, started_at=None, finished_at=None, seconds=None)
            )
            return Claim.RUN

    def cancel_requested(self, job_id: str) -> bool:
        with self.db.session() as s:
            return bool(s.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    def stage_started(self, job_id: str, stage: StageName, total: int) -> None:
        with self.db.session() as s:
            s.execute(
                update(StageRow)
                .where(StageRow.job_id == job_id, StageRow.name == stage)
                .values(state=StageState.RUNNING, frames_total=total, frames_done=0, started_at=utcnow())
            )

    def stage_progress(self, job_id: str, stage: StageName, done: int) -> None:
        with self.db.session() as s:
            s.execute(
                update(StageRow).where(StageRow.job_id == job_id, StageRow.name == stage).values(frames_done=done)
            )

    def stage_finished(self, job_id: str, stage: StageName, state: StageState, seconds: float) -> None:
        with self.db.session() as s:
            s.execute(
                update(StageRow)
                .where(StageRow.job_id == job_id, StageRow.name == stage)
                .values(state=state, finished_at=utcnow(), seconds=round(seconds, 3))
            )
            s.add(_event(job_id, EventKind.STAGE, "worker", f"{stage} {state} in {seconds:.1f}s"))

    def record_run(
        self,
        job_id: str,
        *,
        counters: dict[str, int] | None = None,
        models: ModelsUsed | None = None,
        layers: Iterable[LayerInfo] | None = None,
        warning: str | None = None,
        review: ReviewLinks | None = None,
    ) -> None:
        with self.db.session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                return
            if review is not None:
                row.review = review.model_dump(mode="json", exclude_none=True)
            if counters is not None:
                row.counters = dict(counters)
            if models is not None:
                row.models = models.model_dump(mode="json")
            if layers is not None:
                row.layers = [layer.model_dump(mode="json") for layer in layers]
            if warning and warning not in row.warnings:
                row.warnings = [*row.warnings, warning]
                s.add(_event(job_id, EventKind.WARNING, "worker", warning))

    def finish(
        self, job_id: str, state: JobState, actor: str, *, error: str | None = None, manifest: str | None = None
    ) -> bool:
        """Close the job; False if it was already closed by someone else."""
        with self.db.session() as s:
            values: dict[str, Any] = {"state": state, "finished_at": utcnow()}
            if error is not None:
                values["error"] = error
            if manifest is not None:
                values["manifest"] = manifest
            done = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_([JobState.QUEUED, JobState.RUNNING, JobState.CANCELING]))
                .values(**values)
            ).rowcount
            if done:
                if state != JobState.SUCCEEDED:
                    _set_open_stages(
                        s, job_id, StageState.CANCELED if state == JobState.CANCELED else StageState.FAILED
                    )
                kind = {JobState.SUCCEEDED: EventKind.SUCCEEDED, JobState.CANCELED: EventKind.CANCELED}.get(
                    state, EventKind.FAILED
                )
                s.add(_event(job_id, kind, actor, error or str(state)))
            return bool(done)


def _set_open_stages(s: Session, job_id: str, state: StageState) -> None:
    s.execute(
        update(StageRow)
        .where(StageRow.job_id == job_id, StageRow.state.in_([StageState.WAITING, StageState.RUNNING]))
        .values(state=state)
    )


def _event(job_id: str, kind: EventKind, actor: str, message: str) -> EventRow:
    return EventRow(job_id=job_id, at=utcnow(), kind=kind, actor=actor, message=message)


def _header(row: JobRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "state": JobState(row.state),
        "user": row.user,
        "show": row.show,
        "shot": row.shot,
        "priority": row.priority,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
    }


def _status(row: JobRow) -> JobStatus:
    seconds = None
    if row.started_at and row.finished_at:
        seconds = round((row.finished_at - row.started_at).total_seconds(), 3)
    return JobStatus(
        **_header(row),
        spec=JobSpec.model_validate(row.spec),
        frames=row.frames,
        missing_frames=_missing_frames(row),
        stages=[
            StageStatus(
                name=StageName(st.name),
                state=StageState(st.state),
                frames_done=st.frames_done,
                frames_total=st.frames_total,
                started_at=st.started_at,
                finished_at=st.finished_at,
                seconds=st.seconds,
            )
            for st in row.stages
        ],
        counters=Counters.model_validate(row.counters or {}),
        models=ModelsUsed.model_validate(row.models) if row.models else None,
        warnings=row.warnings or [],
        error=row.error,
        attempts=row.attempts,
        version=row.version,
        output_dir=row.output_dir,
        output_pattern=row.output_pattern,
        manifest=row.manifest,
        review=ReviewLinks.model_validate(row.review) if row.review else None,
        layers=[LayerInfo.model_validate(layer) for layer in row.layers or []],
        started_at=row.started_at,
        seconds=seconds,
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _missing_frames(row: JobRow) -> list[int]:
    """Requested frames the job skipped: the spec's range (or the plate's span) minus its frames."""
    if not row.frames:
        return []
    spec_frames = row.spec.get("frames")
    requested = parse_frame_range(spec_frames) if spec_frames else range(row.frames[0], row.frames[-1] + 1)
    have = set(row.frames)
    return [f for f in requested if f not in have]


def _summary(row: JobRow) -> JobSummary:
    return JobSummary(
        **_header(row),
        prompt=row.prompt,
        frames_done=sum(st.frames_done for st in row.stages),
        frames_total=sum(st.frames_total for st in row.stages),
    )
