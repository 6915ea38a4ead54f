"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from farm_config.settings import Settings, get_settings
from schemas import ErrorBody, FieldProblem
from services.api.routes import control, dashboard, farm, health, jobs, metrics
from services.dispatcher import Broker, Dispatcher
from services.errors import FarmServiceError
from services.farm import FarmService
from services.jobs import JobService
from services.queue import JobQueue
from services.scheduling.retry import RetryPolicy
from services.store import Database, JobStore
from services.store.tasks import TaskStore
from services.store.workers import WorkerRegistry

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, queue: Broker | None = None) -> FastAPI:
    """``queue``: the broker to send task messages to (default: Celery's, from the settings)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.resolved_database_url)
        db.upgrade()
        owned_queue = JobQueue(settings) if queue is None else None
        broker: Broker = queue or owned_queue  # type: ignore[assignment]
        store = JobStore(db)
        tasks = TaskStore(
            db, RetryPolicy(settings.retry_backoff_s, settings.retry_backoff_max_s), settings.blocklist_after
        )
        registry = WorkerRegistry(db, settings.heartbeat_timeout_s)
        dispatcher = Dispatcher(settings, tasks, registry, broker, store, name="api")

        def kick() -> None:
            try:
                dispatcher.dispatch()
            except Exception:  # the loop tries again; a submit must not fail because of it
                log.warning("dispatch after a request failed", exc_info=True)

        app.state.settings, app.state.db = settings, db
        app.state.jobs = JobService(settings, store, tasks, kick)
        app.state.farm = FarmService(tasks, registry, broker.depth)
        app.state.broker = broker
        loop = dispatcher.start_thread() if settings.dispatcher else None
        yield
        if loop is not None:
            thread, stop = loop
            stop.set()
            thread.join(timeout=10)
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
    app.include_router(control.router)  # before jobs: /jobs/bulk/… must not read as a job id
    app.include_router(jobs.router)
    app.include_router(jobs.tasks_router)
    app.include_router(farm.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)

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
