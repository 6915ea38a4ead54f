"""The job service: validate a submission, reserve its output version, store it with its tasks,
and the controls operators use on jobs, stages and tasks."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Protocol

from farm_config.settings import Settings, TokenGrant
from schemas import (
    Event,
    JobPage,
    JobSpec,
    JobState,
    JobStatus,
    MissingFrames,
    StageName,
    SubmitResponse,
    parse_frame_range,
)
from schemas.task import (
    BulkControlRequest,
    BulkControlResult,
    ControlAction,
    ControlRequest,
    ControlResult,
    HostBlock,
    TaskLog,
    TaskStatus,
    require_reason,
)
from services.errors import IdempotencyConflict, InvalidSpec, JobNotFound, NotAllowed, PathNotAllowed
from services.farm.closing import after_job_closed
from services.farm.plate_checks import PlateChecks
from services.farm.versions import VersionFolders
from services.farm.webhooks import webhook_target_problem
from services.paths import confine, confine_existing
from services.store import JobStore
from services.store.repository import JobFilter, NewJob, SubmitKeyTaken
from services.store.task_store import TaskStore
from workers.io.plate import PlateDecoder, PlateError, PlateInfo, resolve_plate


class Kick(Protocol):
    """Ask the farm to act now rather than at its next tick: dispatch, and post the webhook of a
    job this request closed (nothing was running, so no worker will)."""

    def __call__(self, *, job_closed: bool = False) -> None: ...


def _no_kick(*, job_closed: bool = False) -> None:
    """Without a farm loop (scripts, tests): the dispatcher's next tick does the work."""


class JobService:
    def __init__(self, settings: Settings, store: JobStore, tasks: TaskStore, kick: Kick = _no_kick) -> None:
        """``kick`` asks the dispatcher to send work now (after a submit or a control)."""
        self.settings, self.store, self.tasks, self.kick = settings, store, tasks, kick
        self.versions = VersionFolders()
        self.plates = PlateChecks(settings.plate_checks_cached)

    def submit(self, spec: JobSpec, grant: TokenGrant, key: str | None = None) -> SubmitResponse:
        """Validate, reserve the version folder, store the job with its tasks. With ``key`` (the
        client's Idempotency-Key) a retried submission returns the job the first one made."""
        if key is not None:
            earlier = self._earlier(spec, grant, key)
            if earlier is not None:
                return earlier
        check_priority(spec.priority, grant)
        if spec.notify_url is not None:
            problem = webhook_target_problem(spec.notify_url, self.settings.webhook_hosts)
            if problem is not None:
                raise InvalidSpec.on_field("notify_url", problem)
        plate = self._check_plate(spec)
        output_root = self._check_output_root(spec.output_root)
        shot = spec.shot or shot_from_plate(plate)
        version, version_dir = self.reserve_version(shot, output_root / shot / "roto")
        padding = max(4, plate.pattern.padding)
        stem = f"{shot}_roto_v{version:03d}"
        job_id = uuid.uuid4().hex[:12]
        try:
            self.store.create(
                NewJob(
                    id=job_id,
                    spec=spec,
                    user=grant.user,
                    shot=shot,
                    frames=plate.frames,
                    version=version,
                    output_dir=str(version_dir),
                    output_pattern=str(version_dir / f"{stem}.{'#' * padding}.exr"),
                    warnings=[],
                    task_frames=spec.task_frames or self.settings.task_frames,
                    max_attempts=self.settings.max_attempts,
                    submit_key=key,
                )
            )
        except BaseException as exc:
            version_dir.rmdir()  # reserved just now and still empty: no job, no version folder
            if isinstance(exc, SubmitKeyTaken) and key is not None:  # the same key, at the same moment
                earlier = self._earlier(spec, grant, key)
                if earlier is not None:
                    return earlier
            raise
        # The job is stored with its tasks: that is "queued". The dispatcher sends messages when
        # workers are free, so a broker outage delays a job, never loses it.
        self.kick()
        return SubmitResponse(id=job_id, state=JobState.QUEUED, version=version, output_dir=str(version_dir))

    def _earlier(self, spec: JobSpec, grant: TokenGrant, key: str) -> SubmitResponse | None:
        found = self.store.by_submit_key(grant.user, key)
        if found is None:
            return None
        job_id, stored = found
        if stored != spec.model_dump(mode="json"):
            raise IdempotencyConflict.on_field(
                "Idempotency-Key", f"{key!r} was used for job {job_id} with a different spec; use a new key"
            )
        job = self.get(job_id)
        return SubmitResponse(id=job.id, state=job.state, version=job.version, output_dir=job.output_dir, replayed=True)

    def get(self, job_id: str) -> JobStatus:
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}; list jobs with GET /jobs")
        return job

    def visible_to(self, job: JobStatus, grant: TokenGrant) -> JobStatus:
        """Who reads what: every signed-in user reads every job (a studio farm is shared, and its
        monitors need the whole picture), but a job's webhook URL, which may carry a receiver's
        secret, only its owner and admins see."""
        if job.spec.notify_url is None or job.user == grant.user or grant.is_admin:
            return job
        return job.model_copy(update={"spec": job.spec.model_copy(update={"notify_url": None})})

    def review_file(self, job_id: str, field: str) -> Path:
        job = self.get(job_id)
        if job.review is None:
            raise JobNotFound(f"job {job_id} has no review media yet ({job.state}); it is written after the mattes")
        path = Path(getattr(job.review, field))
        if not path.is_file():
            raise JobNotFound(f"{path.name} is gone from {path.parent}; re-run the job to make it again")
        return path

    def events(self, job_id: str) -> list[Event]:
        self.get(job_id)
        return self.store.events(job_id)

    def page(self, where: JobFilter, offset: int, limit: int) -> JobPage:
        return self.store.page(where, offset, min(limit, self.settings.page_size_max))

    def tasks_of(self, job_id: str) -> list[TaskStatus]:
        self.get(job_id)
        return self.tasks.for_job(job_id)

    def task(self, task_id: int) -> TaskStatus:
        task = self.tasks.get(task_id)
        if task is None:
            raise JobNotFound(f"no task {task_id}; list a job's tasks with GET /jobs/{{id}}/tasks")
        return task

    def task_log(self, task_id: int, lines: int, after: int | None = None) -> TaskLog:
        self.task(task_id)
        return self.tasks.log_tail(task_id, lines, after)

    # --- controls ---------------------------------------------------------------------------

    def control(
        self,
        job_id: str,
        action: ControlAction,
        grant: TokenGrant,
        request: ControlRequest,
        *,
        stage: StageName | None = None,
        task_id: int | None = None,
    ) -> ControlResult:
        try:
            require_reason(action, request)
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            raise InvalidSpec.on_field(field, message) from None
        self._may_control(job_id, grant, str(action))
        if action == ControlAction.PRIORITY:
            check_priority(request.priority or 0, grant)
        result, closed = self.tasks.control(
            job_id, action, grant.user, reason=request.reason, priority=request.priority, stage=stage, task_id=task_id
        )
        if closed:
            after_job_closed(self.store, job_id)
        self.kick(job_closed=closed)
        return result

    def blocklist(self, job_id: str) -> list[HostBlock]:
        self.get(job_id)
        return self.tasks.blocklist(job_id)

    def clear_blocklist(self, job_id: str, grant: TokenGrant, reason: str | None) -> list[HostBlock]:
        """The owner or an admin forgets the hosts' failures on the job (the node was fixed)."""
        self._may_control(job_id, grant, "clear the block-list of")
        self.tasks.clear_blocklist(job_id, grant.user, reason)
        self.kick()
        return self.tasks.blocklist(job_id)

    def _may_control(self, job_id: str, grant: TokenGrant, what: str) -> None:
        owner = self.store.owner(job_id)
        if owner is None:
            raise JobNotFound(f"no job {job_id!r}")
        if owner != grant.user and not grant.is_admin:
            raise NotAllowed(f"job {job_id} belongs to {owner}; only its owner or an admin may {what} it")

    def control_task(
        self, task_id: int, action: ControlAction, grant: TokenGrant, request: ControlRequest
    ) -> ControlResult:
        task = self.task(task_id)
        return self.control(task.job_id, action, grant, request, task_id=task_id)

    def bulk(self, action: ControlAction, grant: TokenGrant, request: BulkControlRequest) -> BulkControlResult:
        """Each job on its own: one refusal (not yours, unknown) does not stop the rest."""
        results: list[ControlResult] = []
        for job_id in dict.fromkeys(request.job_ids):
            try:
                results.append(self.control(job_id, action, grant, request))
            except (JobNotFound, NotAllowed, InvalidSpec) as exc:
                results.append(ControlResult(target=job_id, action=action, ok=False, message=exc.message))
        return BulkControlResult(results=results)

    # --- validation -------------------------------------------------------------------------

    def _check_plate(self, spec: JobSpec) -> PlateInfo:
        roots = self.settings.read_roots
        confine(str(Path(spec.plate).parent), roots, "plate", "read")
        frames = parse_frame_range(spec.frames) if spec.frames else None

        def check() -> PlateInfo:
            try:
                plate = resolve_plate(
                    spec.plate,
                    frames,
                    skip_missing=spec.on_missing_frames == MissingFrames.SKIP,
                    part=spec.plate_part,
                    # Confinement comes before any open: a frame symlinked out of the roots is refused unread.
                    before_open=lambda paths: confine_existing(paths, roots, "plate", "read"),
                )
                # Built here so a colour space the config lacks is refused now, not hours later on a worker.
                PlateDecoder.configured(plate, spec.options.max_side, spec.colourspace, self.settings)
            except PlateError as exc:
                raise InvalidSpec.on_field(exc.field, exc.message) from None
            return plate

        key = (
            spec.plate,
            spec.frames,
            spec.on_missing_frames,
            spec.plate_part,
            spec.options.max_side,
            spec.colourspace,
        )
        plate = self.plates.check(key, check)
        self._check_task_count(spec, len(plate.frames))
        return plate

    def _check_task_count(self, spec: JobSpec, frames: int) -> None:
        """A chunk size that would make thousands of tasks is a typo, not a plan."""
        size = spec.task_frames or self.settings.task_frames
        tasks = -(-frames // size)
        if tasks > self.settings.max_tasks_per_stage:
            least = -(-frames // self.settings.max_tasks_per_stage)
            raise InvalidSpec.on_field(
                "task_frames",
                f"{size} frames per task makes {tasks} tasks per stage on this {frames}-frame plate; "
                f"the farm allows {self.settings.max_tasks_per_stage}: give at least {least}",
            )

    def _check_output_root(self, raw: str) -> Path:
        root = confine(raw, self.settings.write_roots, "output_root", "write")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidSpec.on_field("output_root", f"can't create {root} ({exc.strerror})") from None
        if not root.is_dir():
            raise InvalidSpec.on_field("output_root", f"{root} is a file; give a folder")
        if not os.access(root, os.W_OK | os.X_OK):
            raise InvalidSpec.on_field("output_root", f"{root} is not writable by the farm; fix its permissions")
        return root

    def reserve_version(self, shot: str, roto_dir: Path) -> tuple[int, Path]:
        """The next free ``v###`` folder, created here so two submissions never share one."""
        try:
            roto_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidSpec.on_field("output_root", f"can't create {roto_dir} ({exc.strerror})") from None
        try:
            return self.versions.make(roto_dir, self.store.next_version(shot, str(roto_dir) + os.sep))
        except OSError as exc:
            raise PathNotAllowed.on_field(
                "output_root", f"can't create a version folder in {roto_dir} ({exc.strerror})"
            ) from None


RUSH_PRIORITY = 90  # above this, a job jumps every queue: farm admins only


def check_priority(priority: int, grant: TokenGrant) -> None:
    """The one rule for who may rush, at submit and on the priority control alike."""
    if priority > RUSH_PRIORITY and not grant.is_admin:
        raise NotAllowed.on_field(
            "priority", f"priorities above {RUSH_PRIORITY} are for admins (rush); ask a farm admin, or give ≤ 90"
        )


def shot_from_plate(plate: PlateInfo) -> str:
    """'sh010_plate.####.exr' -> 'sh010'; the plate's folder name if the file has no name."""
    head = plate.pattern.head.rstrip("._-")
    for suffix in ("_plate", "-plate", ".plate", "_bg", "_src"):
        if head.lower().endswith(suffix):
            head = head[: -len(suffix)]
    head = re.sub(r"[^A-Za-z0-9_.-]", "_", head).strip("._-")
    return head or re.sub(r"[^A-Za-z0-9_.-]", "_", plate.pattern.directory.name) or "shot"
