"""The FastAPI application factory."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from farm_config.settings import Settings, get_settings
from farm_config.version import VERSION
from schemas import ErrorBody, FieldProblem
from services.api.docs import add_docs
from services.api.routes import control, dashboard, farm, health, jobs, metrics, refine
from services.api.security import AuthFailures, SecurityHeaders
from services.composition import build_api_farm
from services.errors import FarmServiceError, TooManyAttempts
from services.farm.dispatcher import Broker

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, queue: Broker | None = None) -> FastAPI:
    """``queue``: the broker to send task messages to (default: Celery's, from the settings)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        farm = build_api_farm(settings, queue)
        app.state.settings, app.state.db = settings, farm.stores.db
        app.state.jobs, app.state.farm, app.state.broker = farm.jobs, farm.farm, farm.broker
        app.state.refine, app.state.tokens, app.state.review_links = farm.refine, farm.tokens, farm.review_links
        farm.start()
        # What start-up made (modules, the ORM's and OCIO's tables: ~175k objects) lives as long as
        # the process: keep it out of the collector, whose full passes over it paused every request
        # ~50 ms (the API's p99); only what requests allocate is collected.
        gc.freeze()
        try:
            yield
        finally:
            farm.close()

    app = FastAPI(
        title="Matte Farm",
        version=VERSION,
        description="Submit plates with a text prompt; get per-object roto mattes as multi-layer EXRs.",
        lifespan=lifespan,
        docs_url=None,  # served by add_docs from local assets
        redoc_url=None,
    )
    add_docs(app)
    app.add_middleware(SecurityHeaders)
    app.state.auth_failures = AuthFailures(settings.auth_failures_limit, settings.auth_failures_window_s)
    app.include_router(health.router)
    app.include_router(control.router)  # before jobs: /jobs/bulk/… must not read as a job id
    app.include_router(refine.router)
    app.include_router(jobs.router)
    app.include_router(jobs.tasks_router)
    app.include_router(farm.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)

    @app.exception_handler(FarmServiceError)
    async def _farm_error(_: Request, exc: FarmServiceError) -> JSONResponse:
        body = ErrorBody(error=exc.code, message=exc.message, problems=exc.problems)
        headers = {"Retry-After": str(round(exc.retry_after))} if isinstance(exc, TooManyAttempts) else None
        return JSONResponse(body.model_dump(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [FieldProblem(field=_field_of(err), message=_message_of(err)) for err in exc.errors()]
        message = "; ".join(f"{p.field}: {p.message}" for p in problems)
        return JSONResponse(ErrorBody(error="invalid_spec", message=message, problems=problems).model_dump(), 422)

    return app


def _message_of(error: Mapping[str, Any]) -> str:
    if error.get("type") == "json_invalid":  # the location is a byte offset, not a field
        at = next((p for p in error["loc"] if isinstance(p, int)), None)
        where = f" at byte {at}" if at is not None else ""
        return f"the request body is not valid JSON{where}: {(error.get('ctx') or {}).get('error', error['msg'])}"
    return str(error["msg"]).removeprefix("Value error, ")


def _field_of(error: Mapping[str, Any]) -> str:
    """The request field a validation error is about; for a union told apart by a tag (an edit's
    ``kind``), the tag's own name."""
    if error.get("type") == "json_invalid":
        return "body"
    path = [str(p) for p in error["loc"] if p != "body"]
    tag = (error.get("ctx") or {}).get("discriminator")
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found") and tag:
        path.append(str(tag).strip("'\""))
    return ".".join(path) or "body"
