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
        self._environment: dict[str, TokenGrant] = {}

    def cached_grant(self, token: str) -> TokenGrant | None:
        """The grant of an environment token, or of a database token trusted recently: no I/O,
        so the API answers it on its event loop. None: look it up with :meth:`grant_for`."""
        for known, grant in self._environment_grants().items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return grant
        with self._lock:
            cached = self._trusted.get(digest_of(token))
        return cached[0] if cached is not None and cached[1] > self.clock() else None

    def grant_for(self, token: str) -> TokenGrant | None:
        grant = self.cached_grant(token)
        if grant is not None:
            return grant
        digest, now = digest_of(token), self.clock()
        found = self.stored.active(token, datetime.now(UTC))
        with self._lock:
            if found is None:
                self._trusted.pop(digest, None)
                return None
            grant = TokenGrant(found.user, found.is_admin)
            self._trusted[digest] = (grant, now + self.settings.token_cache_s)
            return grant

    def _environment_grants(self) -> dict[str, TokenGrant]:
        """MATTEFARM_TOKENS (or the embedded farm's token file), read once it names any: parsing
        them, or reading the file, on every request was a tenth of a status read."""
        if not self._environment:
            self._environment = self.settings.token_grants()
        return self._environment
