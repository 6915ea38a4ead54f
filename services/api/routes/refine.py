"""/jobs/{id}/refine: the artist's page and every action on it, one API call each (TDs script
the same calls, or replay an edit list with ``mattefarm refine``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import FileResponse, Response

from schemas.refine import DeliverResult, Edit, EditResult, RefineProgress, RefineState, StoredEdit
from services.api.deps import FrameNumber, JobId, UserDep, known_query_only
from services.api.routes.dashboard import STATIC
from services.api.routes.jobs import ERRORS
from services.farm.refine import RefineService

router = APIRouter(prefix="/jobs/{job_id}/refine", tags=["refine"], dependencies=[Depends(known_query_only)])


def get_refine(request: Request) -> RefineService:
    service: RefineService = request.app.state.refine
    return service


RefineDep = Annotated[RefineService, Depends(get_refine)]
PNG = {"content": {"image/png": {}}, "description": "A PNG at working resolution."}


@router.get("", include_in_schema=False)
def refine_page(job_id: JobId) -> FileResponse:
    # The page holds no data and asks for the token (kept out of the URL) to read any.
    return FileResponse(STATIC / "refine.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/state", responses=ERRORS)
def refine_state(job_id: JobId, refine: RefineDep, user: UserDep) -> RefineState:
    """Layers (name, colour, frames, keyframes), frames the farm doubts, edits, who may edit."""
    return refine.state(job_id, user)


@router.get("/frames/{frame}/plate.png", responses={**ERRORS, 200: PNG}, response_class=Response)
def refine_plate(job_id: JobId, frame: FrameNumber, refine: RefineDep, _: UserDep) -> Response:
    """The plate frame through the farm's OCIO view, at working resolution."""
    return Response(refine.plate_png(job_id, frame), media_type="image/png", headers={"Cache-Control": "private"})


@router.get("/frames/{frame}/layers.png", responses={**ERRORS, 200: PNG}, response_class=Response)
def refine_layers(job_id: JobId, frame: FrameNumber, refine: RefineDep, _: UserDep) -> Response:
    """The frame's layers as an index image: value i is the state's i-th layer (0: none)."""
    return Response(refine.layers_png(job_id, frame), media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/progress", responses=ERRORS)
def refine_progress(job_id: JobId, refine: RefineDep, _: UserDep) -> RefineProgress | None:
    """The job's current propagation (frames tracked of at most how many), or its last one."""
    return refine.progress(job_id)


@router.get("/edits", responses=ERRORS)
def refine_edits(job_id: JobId, refine: RefineDep, _: UserDep) -> list[StoredEdit]:
    """The stored edit list, first to last (undone ones marked)."""
    return refine.edits(job_id)


@router.post("/edits", responses=ERRORS)
def refine_edit(job_id: JobId, edit: Annotated[Edit, Body()], refine: RefineDep, user: UserDep) -> EditResult:
    """Apply one edit: click, box, brush, rename, delete, merge, split or propagate."""
    return refine.apply(job_id, edit, user)


@router.post("/undo", responses=ERRORS)
def refine_undo(job_id: JobId, refine: RefineDep, user: UserDep) -> RefineState:
    return refine.undo(job_id, user)


@router.post("/redo", responses=ERRORS)
def refine_redo(job_id: JobId, refine: RefineDep, user: UserDep) -> RefineState:
    return refine.redo(job_id, user)


@router.post("/deliver", responses=ERRORS)
def refine_deliver(job_id: JobId, refine: RefineDep, user: UserDep) -> DeliverResult:
    """Write the next version: unedited layers copied byte for byte, edited ones made anew."""
    return refine.deliver(job_id, user)
