"""Controls: pause, resume, cancel (with a reason), retry dead tasks, change priority — on a job,
a stage of a job, one task, or many jobs at once. Owners act on their jobs, admins on all."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from schemas import StageName
from schemas.task import (
    BulkControlRequest,
    BulkControlResult,
    ControlAction,
    ControlRequest,
    ControlResult,
    HostBlock,
)  # fmt: skip
from services.api.deps import JobId, ServiceDep, TaskId, UserDep, known_query_only
from services.api.routes.jobs import ERRORS

router = APIRouter(tags=["control"], dependencies=[Depends(known_query_only)])


@router.post("/jobs/bulk/{action}", responses=ERRORS)
def control_jobs(
    action: ControlAction, request: BulkControlRequest, jobs: ServiceDep, user: UserDep
) -> BulkControlResult:
    """The same control on many jobs; each is reported on its own (refusals don't stop the rest)."""
    return jobs.bulk(action, user, request)


@router.post("/jobs/{job_id}/{action}", responses=ERRORS)
def control_job(
    job_id: JobId, action: ControlAction, jobs: ServiceDep, user: UserDep, request: ControlRequest | None = None
) -> ControlResult:
    """pause · resume · cancel (body: {"reason": …}) · retry (dead tasks) · priority (body: {"priority": N})."""
    return jobs.control(job_id, action, user, request or ControlRequest())


@router.post("/jobs/{job_id}/stages/{stage}/{action}", responses=ERRORS)
def control_stage(
    job_id: JobId,
    stage: StageName,
    action: ControlAction,
    jobs: ServiceDep,
    user: UserDep,
    request: ControlRequest | None = None,
) -> ControlResult:
    """A control on every task of one stage of a job."""
    return jobs.control(job_id, action, user, request or ControlRequest(), stage=stage)


@router.post("/tasks/{task_id}/{action}", responses=ERRORS)
def control_task(
    task_id: TaskId, action: ControlAction, jobs: ServiceDep, user: UserDep, request: ControlRequest | None = None
) -> ControlResult:
    """A control on one task."""
    return jobs.control_task(task_id, action, user, request or ControlRequest())


@router.get("/jobs/{job_id}/blocklist", responses=ERRORS)
def job_blocklist(job_id: JobId, jobs: ServiceDep, _: UserDep) -> list[HostBlock]:
    """Hosts that failed the job's tasks, and which of them get none of its tasks any more."""
    return jobs.blocklist(job_id)


@router.delete("/jobs/{job_id}/blocklist", responses=ERRORS)
def clear_job_blocklist(
    job_id: JobId, jobs: ServiceDep, user: UserDep, request: ControlRequest | None = None
) -> list[HostBlock]:
    """Owner or admin: forget every host's failures on the job (a fixed node takes its tasks again)."""
    return jobs.clear_blocklist(job_id, user, (request or ControlRequest()).reason)
