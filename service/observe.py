"""Per-request bookkeeping around the app: request id, the checks that need no body, metrics, access log.

A plain ASGI middleware rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs
each request in an extra task with streams between them, which on a busy event loop costs more than
answering a 429 does.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError
from service.guards import BODY_HINT, error_response, require_api_key, route_path
from service.logs import access_fields_line
from service.metrics import Metrics

log = logging.getLogger("service.access")


class Observe:
    """Give every request an id (``X-Request-ID``, kept from the client when sent), refuse a missing API
    key or a declared body over ``max_body_bytes`` before the app reads anything, turn an unhandled error
    into the API's JSON 500, and count, time and log every request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        began = time.perf_counter()
        status = 500
        started = False

        async def stamped(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            refusal = self._refusal(request)
            if refusal is not None:
                await error_response(refusal, path=route_path(scope))(scope, receive, stamped)
            else:
                await self.app(scope, receive, stamped)
        except Exception:
            log.exception("unhandled error (request %s)", request_id)
            if not started:
                error = ApiError("internal_error", "unexpected error; see server logs")
                await error_response(error, path=route_path(scope))(scope, receive, stamped)
        # A cancelled request (client gone, shutdown cut-off) propagates without a record, as it has none.
        self._record(request, request_id, status, time.perf_counter() - began)

    def _refusal(self, request: Request) -> ApiError | None:
        try:
            require_api_key(request)
        except ApiError as exc:
            return exc
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            return ApiError("body_too_large", f"the body exceeds {self.max_body_bytes:,} bytes: {BODY_HINT}")
        return None

    def _record(self, request: Request, request_id: str, status: int, elapsed: float) -> None:
        path = getattr(request.scope.get("route"), "path", "unmatched")
        self.metrics.requests.labels(path, str(status)).inc()
        self.metrics.request_duration.labels(path).observe(elapsed)
        fields = {
            "request_id": request_id, "method": request.method, "path": request.url.path,
            "status": status, "ms": round(1000 * elapsed, 1),
        }  # fmt: skip
        log.info(access_fields_line(fields), extra={"fields": fields})
