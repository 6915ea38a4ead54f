"""Dependencies routes declare in their signatures."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from farm_config.settings import Settings, TokenGrant
from schemas import FieldProblem
from services.api.security import AuthFailures
from services.errors import InvalidSpec, NotAuthenticated, TooManyAttempts
from services.farm.jobs import JobService
from services.farm.review_links import ReviewKind, ReviewLinkSigner
from services.farm.tokens import TokenBook

# The dependencies below that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency
# on its thread pool, a hop (and a wait for the GIL) per dependency per request, which cost about a
# millisecond of CPU on every call under load.


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_service(request: Request) -> JobService:
    return request.app.state.jobs


# Declared so OpenAPI carries the bearer scheme ("Authorize" in /docs); the messages stay ours.
BEARER = HTTPBearer(auto_error=False, description="A farm token (MATTEFARM_TOKENS, `mattefarm tokens add`).")


async def current_user(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
) -> TokenGrant:
    failures: AuthFailures = request.app.state.auth_failures
    client = request.client.host if request.client else "?"
    wait = failures.retry_after(client)
    if wait is not None:
        raise TooManyAttempts(f"too many failed sign-ins from {client}; try again in {wait:.0f}s", retry_after=wait)
    token = bearer.credentials if bearer else ""
    if not token:
        raise NotAuthenticated(
            "send your farm token as 'Authorization: Bearer <token>' (tokens come from `mattefarm tokens add` "
            "or MATTEFARM_TOKENS; the embedded farm writes one to .mattefarm/token)"
        )
    tokens: TokenBook = request.app.state.tokens
    # a database token not trusted lately is looked up off the event loop (the database may be slow)
    grant = tokens.cached_grant(token) or await run_in_threadpool(tokens.grant_for, token)
    if grant is not None:
        return grant
    failures.failed(client)
    raise NotAuthenticated("that token is not known to this farm, or was revoked or expired; check MATTEFARM_TOKEN")


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ServiceDep = Annotated[JobService, Depends(get_service)]
UserDep = Annotated[TokenGrant, Depends(current_user)]


# Identifiers in paths and queries, bounded where the database's types end (an id past a 32-bit
# integer, or a NUL in a string, is a 422 naming it, not the database's 500).
INT32 = 2**31 - 1
JobId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$", description="A job id.")]
TaskId = Annotated[int, Path(ge=1, le=INT32, description="A task id.")]
FrameNumber = Annotated[int, Path(ge=-INT32, le=INT32, description="A plate frame number.")]
Offset = Annotated[int, Query(ge=0, le=INT32)]
WorkerName = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f/]+$", description="A worker.")
]
Name = Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]


async def review_access(
    request: Request,
    job_id: JobId,
    kind: ReviewKind,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
    expires: Annotated[int | None, Query(ge=0, le=2**40, description="A signed link's expiry (Unix s).")] = None,
    sig: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$", description="A signed link's signature.")] = None,
) -> None:
    """Review media open with a token, or with a signed link (POST /jobs/{id}/review/links) that
    names this job and file and has not expired."""
    if sig is None and expires is None:
        await current_user(request, bearer)
        return
    if sig is None or expires is None:
        raise InvalidSpec("a signed review link needs both expires and sig", [
            FieldProblem(field="query.sig" if sig is None else "query.expires", message="missing from the link")
        ])  # fmt: skip
    signer: ReviewLinkSigner = request.app.state.review_links
    why = signer.verify(job_id, kind, expires, sig)
    if why is not None:
        raise NotAuthenticated(why)


async def known_query_only(request: Request) -> None:
    """Refuse query parameters the route does not take (a typo like ?stat=running would else
    list every job): a 422 naming each, with what the route accepts."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _query_names(route)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        accepted = ", ".join(sorted(known)) or "none"
        raise InvalidSpec(
            f"unknown query parameter(s): {', '.join(unknown)}; this call takes: {accepted}",
            [
                FieldProblem(field=f"query.{name}", message=f"not a parameter of this call (it takes: {accepted})")
                for name in unknown
            ],
        )


def _query_names(route: Any) -> frozenset[str]:
    """The query parameters a route takes, walked out of its dependency tree once per route and
    kept on the route itself."""
    known: frozenset[str] | None = getattr(route, "_mattefarm_query_names", None)
    if known is None:
        known = frozenset(p.alias for p in _query_params(route.dependant))
        route._mattefarm_query_names = known
    return known


def _query_params(dependant: Any) -> list[Any]:
    params = list(dependant.query_params)
    for sub in dependant.dependencies:
        params += _query_params(sub)
    return params
