"""HTTP pages of the centre view: `/wallboard`, `/api/kpis` and `/api/events` (SSE)."""

from __future__ import annotations

import asyncio
import time
from importlib.resources import files
from typing import Any

import orjson
from aiohttp import web

from exporters.auth import Guard
from exporters.centre import CentreView

_PAGE = files("exporters").joinpath("static/wallboard.html").read_bytes()
_KEEPALIVE = 5.0  # seconds between pushes when nothing changed (carries the stale flag)
_POLL = 0.2  # how often a stream looks for a change: well inside the 1 s target


def register(
    app: Any, view: CentreView, window: str, thresholds: Any, guard: Guard
) -> None:
    """Add the pages to a Faust app; all three are readable with the kiosk token."""

    def document(request: Any) -> dict[str, Any]:
        return view.document(window, thresholds, queue=request.query.get("queue") or None)

    async def api(page: Any, request: Any) -> Any:
        return page.json(document(request))

    async def board(page: Any, request: Any) -> Any:
        return page.bytes(_PAGE, content_type="text/html")

    async def events(page: Any, request: Any) -> Any:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
        })
        await response.prepare(request)
        sent: tuple[int, bool] | None = None
        sent_at = 0.0
        try:
            while True:
                # Cheap check first: the document is rebuilt only when something changed.
                now = time.monotonic()
                stale = view.received_at is None or time.time() - view.received_at > (
                    view.stale_after
                )
                state = (view.version, stale)
                if state != sent or now - sent_at >= _KEEPALIVE:
                    payload = orjson.dumps(document(request))
                    await response.write(b"data: " + payload + b"\n\n")
                    sent, sent_at = state, now
                await asyncio.sleep(_POLL)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the client went away, or the worker is stopping
        return response

    app.page("/wallboard", name="wallboard")(guard.protect("kiosk", board))
    app.page("/api/kpis", name="api_kpis")(guard.protect("kiosk", api))
    app.page("/api/events", name="api_events")(guard.protect("kiosk", events))
