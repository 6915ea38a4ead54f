"""Dependencies routes declare in their signatures."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from farm_config.settings import Settings, TokenGrant
from services.errors import NotAuthenticated
from services.farm.jobs import JobService


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_service(request: Request) -> JobService:
    return request.app.state.jobs


def current_user(
    settings: Annotated[Settings, Depends(get_settings_dep)],
    authorization: Annotated[str | None, Header()] = None,
) -> TokenGrant:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated(
            "send your farm token as 'Authorization: Bearer <token>' (tokens come from MATTEFARM_TOKENS; "
            "the embedded farm writes one to .mattefarm/token)"
        )
    for known, grant in settings.token_grants().items():
        if hmac.compare_digest(known.encode(), token.encode()):
            return grant
    raise NotAuthenticated("that token is not known to this farm; check MATTEFARM_TOKEN")


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ServiceDep = Annotated[JobService, Depends(get_service)]
UserDep = Annotated[TokenGrant, Depends(current_user)]
