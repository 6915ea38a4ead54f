"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from farm_config.settings import Settings, get_settings
from schemas import ErrorBody, FieldProblem
from services.api.routes import health, jobs, metrics
from services.errors import FarmServiceError
from services.jobs import JobService, Queue
from services.queue import JobQueue
from services.store import Database, JobStore


def create_app(settings: Settings | None = None, queue: Queue | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.resolved_database_url)
        db.upgrade()
        owned_queue = None
        if queue is None:
            owned_queue = JobQueue(settings)
        store = JobStore(db)
        app.state.settings, app.state.db = settings, db
        app.state.jobs = JobService(settings, store, queue or owned_queue)
        yield
        if owned_queue is not None:
            owned_queue.close()
        db.dispose()

    app = FastAPI(
        title="Matte Farm",
        version="0.1.0",
        description="Submit plates with a text prompt; get per-object roto mattes as multi-layer EXRs.",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(metrics.router)

    @app.exception_handler(FarmServiceError)
    async def _farm_error(_: Request, exc: FarmServiceError) -> JSONResponse:
        body = ErrorBody(error=exc.code, message=exc.message, problems=exc.problems)
        return JSONResponse(body.model_dump(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            FieldProblem(
                field=".".join(str(p) for p in err["loc"] if p != "body") or "body",
                message=str(err["msg"]).removeprefix("Value error, "),
            )
            for err in exc.errors()
        ]
        message = "; ".join(f"{p.field}: {p.message}" for p in problems)
        return JSONResponse(ErrorBody(error="invalid_spec", message=message, problems=problems).model_dump(), 422)

    return app
