"""``FarmClient``: the Python client for scripts, used by the CLI too.

Errors form one tree::

    FarmError                    anything the client raises
    ├── FarmConnectionError      the API can't be reached (retryable)
    ├── FarmTimeout              a wait ran past its timeout (also a built-in TimeoutError)
    └── FarmAPIError             the API answered with an error (status, problems)
        ├── FarmAuthError        401 / 403
        ├── FarmNotFound         404
        └── FarmInvalidSpec      422: ``problems`` lists each field and what to fix
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from schemas import (
    Event,
    FarmOverview,
    FieldProblem,
    JobPage,
    JobSpec,
    JobStatus,
    SignedReviewLinks,
    SubmitResponse,
    WorkerInfo,
)  # fmt: skip
from schemas.refine import DeliverResult, Edit, EditResult, RefineProgress, RefineState
from schemas.task import BulkControlResult, ControlResult, TaskLog, TaskStatus


class FarmError(Exception):
    retryable = False


class FarmTimeout(FarmError, TimeoutError):
    """A wait ran out of time; the jobs it waited on are in ``pending``."""

    def __init__(self, message: str, pending: list[str] | None = None) -> None:
        super().__init__(message)
        self.pending = pending or []


class FarmConnectionError(FarmError):
    retryable = True


class FarmAPIError(FarmError):
    def __init__(self, status: int, code: str, message: str, problems: list[FieldProblem]) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.problems = status, code, message, problems
        self.retryable = status == 503


class FarmAuthError(FarmAPIError):
    pass


class FarmNotFound(FarmAPIError):
    pass


class FarmInvalidSpec(FarmAPIError):
    pass


_BY_STATUS: dict[int, type[FarmAPIError]] = {
    401: FarmAuthError,
    403: FarmAuthError,
    404: FarmNotFound,
    422: FarmInvalidSpec,
}


class FarmClient:
    """A thin client over the HTTP API. Pass ``transport`` to talk to an app in-process."""

    def __init__(
        self, base_url: str, token: str, *, timeout: float = 30.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout, transport=transport
        )

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise FarmConnectionError(f"can't reach the farm at {self._http.base_url} ({exc})") from exc
        if response.is_success:
            return response.json()
        try:
            body = response.json()
        except ValueError:
            body = {"error": "http_error", "message": response.text[:500] or response.reason_phrase}
        problems = [FieldProblem.model_validate(p) for p in body.get("problems", [])]
        error_type = _BY_STATUS.get(response.status_code, FarmAPIError)
        raise error_type(response.status_code, body.get("error", "error"), body.get("message", ""), problems)

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")

    def submit(
        self,
        spec: JobSpec | dict[str, Any],
        *,
        idempotency_key: str | None = None,
        retries: int = 4,
        backoff_s: float = 0.5,
    ) -> SubmitResponse:
        """Submit once: every attempt sends the same Idempotency-Key (made here unless given), so
        a retry after a dropped connection or a restarted API returns the first job, never a twin."""
        payload = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, JobSpec) else spec
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        for attempt in range(retries + 1):
            try:
                return SubmitResponse.model_validate(self._call("POST", "/jobs", json=payload, headers=headers))
            except FarmError as exc:
                if not exc.retryable or attempt == retries:
                    raise
                time.sleep(backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def job(self, job_id: str) -> JobStatus:
        return JobStatus.model_validate(self._call("GET", f"/jobs/{job_id}"))

    def events(self, job_id: str) -> list[Event]:
        return [Event.model_validate(e) for e in self._call("GET", f"/jobs/{job_id}/events")]

    def jobs(self, *, offset: int = 0, limit: int = 50, **filters: str | None) -> JobPage:
        """A page of jobs; filters: state, show, shot, user, id_prefix, q (text), since, until
        (ISO dates), sort (created, priority, state, user, show, shot, finished), order (asc, desc)."""
        unknown = set(filters) - {"state", "show", "shot", "user", "id_prefix", "q", "since", "until", "sort", "order"}
        if unknown:
            raise TypeError(f"unknown job filter(s): {', '.join(sorted(unknown))}")
        params = {k: v for k, v in filters.items() if v is not None} | {"offset": offset, "limit": limit}
        return JobPage.model_validate(self._call("GET", "/jobs", params=params))

    def review_links(self, job_id: str, ttl_s: int | None = None) -> SignedReviewLinks:
        """Links to the job's review movie and contact sheet that open without a token header."""
        params = {"ttl_s": ttl_s} if ttl_s is not None else None
        return SignedReviewLinks.model_validate(self._call("POST", f"/jobs/{job_id}/review/links", params=params))

    def resolve_job(self, ref: str) -> str:
        """The full id of the one job whose id starts with ``ref`` (as ``git`` takes abbreviated
        hashes); FarmNotFound when none does, FarmInvalidSpec naming the matches when several do."""
        if not ref or len(ref) > 32 or not ref.replace("-", "").replace("_", "").isalnum():
            raise FarmInvalidSpec(422, "invalid_spec", f"{ref!r} is not a job id", [
                FieldProblem(field="job_id", message="letters, digits, - and _ (an id or its first characters)")
            ])  # fmt: skip
        page = self.jobs(id_prefix=ref, limit=5)
        ids = [j.id for j in page.items]
        if ref in ids:
            return ref
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise FarmNotFound(404, "not_found", f"no job id starts with {ref!r}", [])
        more = f" and {page.total - len(ids)} more" if page.total > len(ids) else ""
        raise FarmInvalidSpec(422, "invalid_spec", f"{ref!r} matches {page.total} jobs ({', '.join(ids)}{more})", [
            FieldProblem(field="job_id", message="give more of the id")
        ])  # fmt: skip

    def control(
        self,
        job_id: str,
        action: str,
        *,
        reason: str | None = None,
        priority: int | None = None,
        stage: str | None = None,
    ) -> ControlResult:
        """pause, resume, cancel (reason required), retry (dead tasks) or priority, on a job or one stage."""
        path = f"/jobs/{job_id}/stages/{stage}/{action}" if stage else f"/jobs/{job_id}/{action}"
        return ControlResult.model_validate(self._call("POST", path, json={"reason": reason, "priority": priority}))

    def cancel(self, job_id: str, reason: str) -> ControlResult:
        return self.control(job_id, "cancel", reason=reason)

    def control_task(self, task_id: int, action: str, *, reason: str | None = None) -> ControlResult:
        return ControlResult.model_validate(self._call("POST", f"/tasks/{task_id}/{action}", json={"reason": reason}))

    def bulk(
        self, job_ids: list[str], action: str, *, reason: str | None = None, priority: int | None = None
    ) -> BulkControlResult:
        body = {"job_ids": job_ids, "reason": reason, "priority": priority}
        return BulkControlResult.model_validate(self._call("POST", f"/jobs/bulk/{action}", json=body))

    def tasks(self, job_id: str) -> list[TaskStatus]:
        return [TaskStatus.model_validate(t) for t in self._call("GET", f"/jobs/{job_id}/tasks")]

    def task(self, task_id: int) -> TaskStatus:
        return TaskStatus.model_validate(self._call("GET", f"/tasks/{task_id}"))

    def task_log(self, task_id: int, tail: int = 200, after: int | None = None) -> TaskLog:
        """The last ``tail`` lines, or (``after``) up to ``tail`` lines after the first ``after``."""
        params: dict[str, int] = {"tail": tail} | ({"after": after} if after is not None else {})
        return TaskLog.model_validate(self._call("GET", f"/tasks/{task_id}/log", params=params))

    def farm(self) -> FarmOverview:
        return FarmOverview.model_validate(self._call("GET", "/farm"))

    def drain(self, worker: str) -> WorkerInfo:
        return WorkerInfo.model_validate(self._call("POST", f"/workers/{worker}/drain"))

    def undrain(self, worker: str) -> WorkerInfo:
        return WorkerInfo.model_validate(self._call("POST", f"/workers/{worker}/undrain"))

    def refine_state(self, job_id: str) -> RefineState:
        return RefineState.model_validate(self._call("GET", f"/jobs/{job_id}/refine/state"))

    def refine_edit(self, job_id: str, edit: Edit) -> EditResult:
        payload = edit.model_dump(mode="json")
        return EditResult.model_validate(self._call("POST", f"/jobs/{job_id}/refine/edits", json=payload))

    def refine_progress(self, job_id: str) -> RefineProgress | None:
        data = self._call("GET", f"/jobs/{job_id}/refine/progress")
        return RefineProgress.model_validate(data) if data is not None else None

    def wait_propagation(
        self,
        job_id: str,
        *,
        timeout: float = 3600.0,
        poll: float = 0.5,
        on_progress: Callable[[RefineProgress], None] | None = None,
    ) -> RefineProgress:
        """Poll until the job's propagation is over; FarmTimeout past ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            progress = self.refine_progress(job_id)
            if progress is None:
                raise FarmNotFound(404, "not_found", f"job {job_id} has no propagation", [])
            if on_progress is not None:
                on_progress(progress)
            if not progress.running:
                return progress
            if time.monotonic() > deadline:
                raise FarmTimeout(f"propagation {progress.task_id} still {progress.state} after {timeout:.0f}s")
            time.sleep(poll)

    def refine_deliver(self, job_id: str) -> DeliverResult:
        return DeliverResult.model_validate(self._call("POST", f"/jobs/{job_id}/refine/deliver"))

    def wait(self, job_id: str, *, timeout: float = 3600.0, poll: float = 1.0) -> JobStatus:
        """Poll until the job is final; FarmTimeout past ``timeout`` seconds. Rides out a dropped
        connection, a restarted API or a 503 (retried until the deadline)."""
        return self.wait_all([job_id], timeout=timeout, poll=poll)[job_id]

    def wait_all(self, job_ids: list[str], *, timeout: float = 3600.0, poll: float = 1.0) -> dict[str, JobStatus]:
        """Poll until every job is final (each job read once per round); FarmTimeout names the
        ones still open. Connection errors and 503s are waited out until the deadline."""
        deadline = time.monotonic() + timeout
        done: dict[str, JobStatus] = {}
        last_problem = ""
        while True:
            for job_id in [j for j in job_ids if j not in done]:
                try:
                    job = self.job(job_id)
                except FarmError as exc:
                    if not exc.retryable:
                        raise
                    last_problem = str(exc)
                    break  # the farm is away: wait a round, then ask again
                if job.state.is_final:
                    done[job_id] = job
            if len(done) == len(set(job_ids)):
                return done
            if time.monotonic() > deadline:
                pending = [j for j in job_ids if j not in done]
                why = f" (last: {last_problem})" if last_problem else ""
                raise FarmTimeout(f"{len(pending)} job(s) not finished after {timeout:.0f}s{why}", pending)
            time.sleep(poll)
