"""Who a request's token acts as: the one home of that rule, for every route and page.

Two sources: the tokens in MATTEFARM_TOKENS (and the embedded farm's dev token), compared in
constant time, and the database's tokens (``mattefarm tokens add``), found by their SHA-256. A
database token found is trusted for ``token_cache_s`` seconds by this API process, so a request
costs no query; a revoked or expired token stops working within that time."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from farm_config.settings import Settings, TokenGrant
from services.store.api_tokens import ApiTokens, digest_of


class TokenBook:
    def __init__(self, settings: Settings, stored: ApiTokens, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.stored, self.clock = settings, stored, clock
        self._trusted: dict[str, tuple[TokenGrant, float]] = {}  # digest → (grant, until)
        self._lock = threading.Lock()

    def grant_for(self, token: str) -> TokenGrant | None:
        for known, grant in self.settings.token_grants().items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return grant
        digest, now = digest_of(token), self.clock()
        with self._lock:
            cached = self._trusted.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        found = self.stored.active(token, datetime.now(UTC))
        with self._lock:
            if found is None:
                self._trusted.pop(digest, None)
                return None
            grant = TokenGrant(found.user, found.is_admin)
            self._trusted[digest] = (grant, now + self.settings.token_cache_s)
            return grant
