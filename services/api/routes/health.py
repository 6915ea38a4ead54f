"""/healthz: can this API do its work — reach its database and its broker. 200 when both answer,
503 naming what does not (a load balancer takes the API out; a monitor sees why)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    started = time.perf_counter()
    try:
        with request.app.state.db.session() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        request.app.state.broker.depth([])
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if healthy else "degraded", **checks, "ms": round(1000 * (time.perf_counter() - started), 1)}
    return JSONResponse(body, 200 if healthy else 503)
