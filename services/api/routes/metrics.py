"""/metrics for Prometheus (no token: scrapers are kept out at the network, like /healthz)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from services.api.deps import ServiceDep
from services.api.routes.farm import FarmDep
from services.api.routes.refine import RefineDep
from services.farm import metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
def prometheus_metrics(jobs: ServiceDep, farm: FarmDep, refine: RefineDep) -> Response:
    return Response(
        metrics.render(jobs.store, farm, refine.stores.refine_edits, refine.stores.refine_tasks),
        media_type=CONTENT_TYPE_LATEST,
    )
