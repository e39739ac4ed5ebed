"""Pure ASGI middleware (Starlette's BaseHTTPMiddleware would break streaming cancellation): gives every request an
id, puts it in the log context and the `x-request-id` response header, and logs one line per request; a generation
request's ledger entry is opened before the app runs and closed after the last byte of the response (or the
client's disconnect), which is when its outcome, latency and tokens are finally known."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from service.logs import request_id_var
from service.state.ledger import CLIENT_CLOSED, Entry, observe

log = logging.getLogger("ponder.access")

LEDGERED_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})


class RequestIdMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        entry = Entry(id=request_id, route=scope["path"]) if scope["method"] == "POST" and scope["path"] in LEDGERED_ROUTES else None
        scope.setdefault("state", {}).update(request_id=request_id, entry=entry)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Unhandled: Starlette's outermost middleware answers 500; the ledger must say so, not "cancelled".
            status = status or 500
            if entry is not None:
                entry.fail(500, "Internal server error", "internal_error")
            raise
        finally:
            if entry is not None:
                record = entry.close(status or CLIENT_CLOSED)  # no response started: the client left first
                observe(record)
                scope["app"].state.ledger.submit(record)
            log.info(
                "%s %s %d %.1f ms",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
            )
            request_id_var.reset(token)
