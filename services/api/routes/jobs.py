"""/jobs: submit, read, list, cancel."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import FileResponse

from schemas import ErrorBody, Event, JobPage, JobSort, JobSpec, JobState, JobStatus, SignedReviewLinks, SubmitResponse
from schemas.task import TaskLog, TaskStatus
from services.api.deps import (
    INT32,
    JobId,
    Name,
    Offset,
    ServiceDep,
    SettingsDep,
    TaskId,
    UserDep,
    known_query_only,
    review_access,
)  # fmt: skip
from services.farm.review_links import REVIEW_KINDS, ReviewKind, ReviewLinkSigner
from services.store.repository import JobFilter

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(known_query_only)])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (401, 403, 404, 422, 503)}


@router.post("", status_code=status.HTTP_201_CREATED, responses=ERRORS)
def submit_job(
    spec: JobSpec,
    jobs: ServiceDep,
    user: UserDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=8,
            max_length=128,
            pattern=r"^[A-Za-z0-9._:-]+$",
            description="A key the client makes once per submission (e.g. a UUID) and sends again on every retry: "
            "the retry returns the first job ('replayed': true) instead of making a second one.",
        ),
    ] = None,
) -> SubmitResponse:
    """Validate a shot, reserve its output version, store it and queue it."""
    return jobs.submit(spec, user, idempotency_key)


@router.get("", responses=ERRORS)
def list_jobs(
    jobs: ServiceDep,
    _: UserDep,
    state: Annotated[
        list[JobState] | None, Query(description="Repeat for several: ?state=queued&state=running")
    ] = None,
    show: Name = None,
    shot: Name = None,
    user: Name = None,
    id_prefix: Annotated[
        str | None, Query(max_length=32, pattern=r"^[A-Za-z0-9_-]+$", description="Jobs whose id starts so.")
    ] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$", description="Text in the id, show, shot, user or prompt."
        ),
    ] = None,
    since: Annotated[datetime | None, Query(description="Submitted at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="Submitted before (ISO 8601).")] = None,
    sort: JobSort = "created",
    order: Literal["asc", "desc"] = "desc",
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobPage:
    """Jobs, filtered by state, show, shot, user, id prefix, text and submission date, sorted
    (newest first by default) and paged on the server."""
    where = JobFilter(
        state=state, show=show, shot=shot, user=user, id_prefix=id_prefix, search=q,
        since=_aware(since), until=_aware(until), sort=sort, descending=order == "desc",
    )  # fmt: skip
    return jobs.page(where, offset, limit)


def _aware(at: datetime | None) -> datetime | None:
    """A date without a zone is read as UTC (the farm's clock)."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


@router.get("/{job_id}", responses=ERRORS)
def get_job(job_id: JobId, jobs: ServiceDep, user: UserDep) -> JobStatus:
    """State, per-stage progress and timings, model-call counters, layers and outputs (the
    webhook URL only for its owner and admins)."""
    return jobs.visible_to(jobs.get(job_id), user)


@router.get("/{job_id}/events", responses=ERRORS)
def job_events(job_id: JobId, jobs: ServiceDep, _: UserDep) -> list[Event]:
    """The job's audit trail."""
    return jobs.events(job_id)


@router.get("/{job_id}/tasks", responses=ERRORS)
def job_tasks(job_id: JobId, jobs: ServiceDep, _: UserDep) -> list[TaskStatus]:
    """The job's tasks (chunks of each stage) in pipeline order: state, attempts, worker, timings."""
    return jobs.tasks_of(job_id)


REVIEW_MEDIA: dict[ReviewKind, tuple[str, str]] = {
    "movie": ("movie", "video/mp4"),
    "contact-sheet": ("contact_sheet", "image/jpeg"),
}


@router.get(
    "/{job_id}/review/{kind}",
    responses=ERRORS,
    response_class=FileResponse,
    dependencies=[Depends(review_access)],
)
def review_media(job_id: JobId, kind: ReviewKind, jobs: ServiceDep) -> FileResponse:
    """The job's review MP4 or contact-sheet JPEG, once the export has written them: with a token,
    or with a signed link's ``expires`` and ``sig`` (no header needed: RV, a browser)."""
    field, media_type = REVIEW_MEDIA[kind]
    path = jobs.review_file(job_id, field)
    return FileResponse(path, media_type=media_type, filename=path.name)


@router.post("/{job_id}/review/links", responses=ERRORS)
def sign_review_links(
    job_id: JobId,
    request: Request,
    jobs: ServiceDep,
    settings: SettingsDep,
    _: UserDep,
    ttl_s: Annotated[int | None, Query(ge=60, le=7 * 24 * 3600, description="Seconds the links open.")] = None,
) -> SignedReviewLinks:
    """Links to the review media that open without a token header until they expire (default
    REVIEW_LINK_TTL_S), for RV, a browser or an email; they grant nothing else."""
    jobs.review_file(job_id, "movie")  # a 404 now, not when someone opens the link
    signer: ReviewLinkSigner = request.app.state.review_links
    ttl = ttl_s or settings.review_link_ttl_s
    base = str(request.base_url).rstrip("/")
    movie, sheet = (signer.sign(job_id, kind, ttl) for kind in REVIEW_KINDS)
    return SignedReviewLinks(
        movie_url=base + movie.path,
        contact_sheet_url=base + sheet.path,
        expires_at=datetime.fromtimestamp(movie.expires, UTC),
    )


tasks_router = APIRouter(prefix="/tasks", tags=["tasks"], dependencies=[Depends(known_query_only)])


@tasks_router.get("/{task_id}", responses=ERRORS)
def get_task(task_id: TaskId, jobs: ServiceDep, _: UserDep) -> TaskStatus:
    return jobs.task(task_id)


@tasks_router.get("/{task_id}/log", responses=ERRORS)
def task_log(
    task_id: TaskId,
    jobs: ServiceDep,
    _: UserDep,
    tail: Annotated[int, Query(ge=1, le=5000)] = 200,
    after: Annotated[
        int | None, Query(ge=0, le=INT32, description="Only lines after the first N (to follow a log).")
    ] = None,
) -> TaskLog:
    """The last ``tail`` lines the task's attempts logged (worker, attempt and level on each); with
    ``after``, up to ``tail`` lines following the first ``after``."""
    return jobs.task_log(task_id, tail, after)
