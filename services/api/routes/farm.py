"""/farm and /workers: what farm monitors watch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from schemas import FarmHistory, FarmOverview, WorkerInfo
from schemas.refine import RefineProgress
from services.api.deps import UserDep, WorkerName, known_query_only
from services.api.routes.jobs import ERRORS
from services.api.routes.refine import RefineDep
from services.errors import NotAllowed
from services.farm.overview import FarmService

router = APIRouter(tags=["farm"], dependencies=[Depends(known_query_only)])


def get_farm(request: Request) -> FarmService:
    return request.app.state.farm


FarmDep = Annotated[FarmService, Depends(get_farm)]


class Me(BaseModel):
    user: str
    is_admin: bool


@router.get("/me", responses=ERRORS)
def me(user: UserDep) -> Me:
    """Who this token acts as (the dashboard shows admins' controls only to admins)."""
    return Me(user=user.user, is_admin=user.is_admin)


@router.get("/farm", responses=ERRORS)
def farm_overview(farm: FarmDep, _: UserDep) -> FarmOverview:
    """Queues (broker messages, tasks queued, oldest wait) and workers, in one read."""
    return farm.overview()


@router.get("/farm/history", responses=ERRORS)
def farm_history(
    farm: FarmDep,
    _: UserDep,
    hours: Annotated[float, Query(gt=0, le=168, description="How far back.")] = 6.0,
    bucket_s: Annotated[int | None, Query(ge=60, le=86400, description="Bucket width; default ~60 buckets.")] = None,
) -> FarmHistory:
    """Jobs finished, frames delivered, failed attempts by reason and queue depth over the last
    hours, from the store (the dashboard's graphs)."""
    return farm.history(hours, bucket_s)


@router.get("/farm/propagations", responses=ERRORS)
def list_propagations(
    refine: RefineDep, _: UserDep, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[RefineProgress]:
    """Artists' propagations across the farm (farm tasks on the refine queue): open ones first."""
    return refine.propagations(limit)


@router.get("/workers", responses=ERRORS)
def list_workers(farm: FarmDep, _: UserDep) -> list[WorkerInfo]:
    """Workers: host, GPU, memory, loaded models, current task and progress, heartbeat."""
    return farm.overview().workers


@router.post("/workers/{name}/drain", responses=ERRORS)
def drain_worker(name: WorkerName, farm: FarmDep, user: UserDep) -> WorkerInfo:
    """Admins: the worker hands its task back between frames (requeued, not counted) and takes no more."""
    if not user.is_admin:
        raise NotAllowed("draining a worker is for farm admins")
    return farm.drain(name)


@router.post("/workers/{name}/undrain", responses=ERRORS)
def undrain_worker(name: WorkerName, farm: FarmDep, user: UserDep) -> WorkerInfo:
    """Admins: a drained worker takes work again."""
    if not user.is_admin:
        raise NotAllowed("undraining a worker is for farm admins")
    return farm.undrain(name)
