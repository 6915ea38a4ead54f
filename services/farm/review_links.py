"""Signed, expiring review links: a URL that opens one job's review movie or contact sheet
without an Authorization header (RV, a browser tab, a link in an email), for a limited time.

The link carries ``expires`` (Unix seconds) and ``sig`` = HMAC-SHA256(farm key, "job:kind:expires");
it names no token and grants nothing else, so one that lands in a proxy log leaks only that
file, until it expires."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal, get_args

from farm_config.settings import Settings
from services.paths import kept_secret

ReviewKind = Literal["movie", "contact-sheet"]  # the review files a link (or a route) may name


def review_link_secret(settings: Settings) -> str:
    if settings.review_link_secret:
        return settings.review_link_secret
    return kept_secret(settings.review_link_secret_path, lambda: secrets.token_hex(32))


@dataclass(frozen=True)
class SignedLink:
    path: str  # /jobs/ID/review/KIND?expires=…&sig=…
    expires: int


REVIEW_KINDS: tuple[ReviewKind, ...] = get_args(ReviewKind)


class ReviewLinkSigner:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def _sig(self, job_id: str, kind: str, expires: int) -> str:
        return hmac.new(self._key, f"{job_id}:{kind}:{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, job_id: str, kind: str, ttl_s: int, now: float | None = None) -> SignedLink:
        expires = int(now if now is not None else time.time()) + ttl_s
        return SignedLink(
            f"/jobs/{job_id}/review/{kind}?expires={expires}&sig={self._sig(job_id, kind, expires)}", expires
        )

    def verify(self, job_id: str, kind: str, expires: int, sig: str, now: float | None = None) -> str | None:
        """None when the link opens; else why not (expired, or not signed by this farm)."""
        if not hmac.compare_digest(self._sig(job_id, kind, expires), sig):
            return "this review link was not signed by this farm (or was altered)"
        if expires <= (now if now is not None else time.time()):
            return "this review link has expired; ask for a new one (mattefarm review JOB)"
        return None
