"""Optional bearer tokens for the HTTP endpoints.

Two scopes: `kiosk` (the wallboard and the feeds it reads: read-only KPI views, for a
URL that sits on a TV) and `api` (`/metrics` and the JSON API for machines). A token
travels as `Authorization: Bearer <token>` or, for browsers that cannot set headers
(TVs, EventSource), as `?token=<token>`. With no token configured a scope is open;
the default bind address (127.0.0.1) then keeps it local.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Literal

Scope = Literal["kiosk", "api"]
Handler = Callable[[Any, Any], Awaitable[Any]]


class Guard:
    """Decides whether a request may see a scope."""

    def __init__(self, api_token: str | None, kiosk_token: str | None) -> None:
        self.api_token = api_token or None
        self.kiosk_token = kiosk_token or None

    def allows(self, request: Any, scope: Scope) -> bool:
        accepted = [self.api_token]
        if scope == "kiosk":
            accepted.append(self.kiosk_token)
        configured = [t for t in accepted if t is not None]
        if scope == "api" and self.api_token is None:
            return True
        if scope == "kiosk" and self.api_token is None and self.kiosk_token is None:
            return True
        presented = _presented(request)
        return presented is not None and any(
            hmac.compare_digest(presented.encode(), t.encode()) for t in configured
        )

    def protect(self, scope: Scope, handler: Handler) -> Handler:
        """Wrap a Faust page handler: 401 unless the request carries a valid token."""

        async def guarded(page: Any, request: Any) -> Any:
            if not self.allows(request, scope):
                return page.json(
                    {"error": "a valid token is required"}, status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="kpimon"'},
                )
            return await handler(page, request)

        return guarded


def _presented(request: Any) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return str(header[len("Bearer "):]).strip() or None
    token = request.query.get("token")
    return str(token) if token else None
