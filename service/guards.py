"""Request guards that run before a route: body size while it streams, API keys; and the error response."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.error_shapes import KSERVE_PREFIX, error_body, error_status
from service.errors import ApiError


def error_response(
    error: ApiError,
    request_id: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    path: str = "",
) -> JSONResponse:
    """The error as JSON in the shape the API family of ``path`` (see :func:`route_path`) uses, and its code
    in ``X-Error-Code`` too: the Open Inference Protocol's error body has room for a message only."""
    headers = {**(extra_headers or {}), **({"X-Request-ID": request_id} if request_id else {})}
    headers["X-Error-Code"] = error.code
    if error.status == 429:
        headers["Retry-After"] = "1"
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="lit"'  # RFC 9110: a 401 names its scheme
    return JSONResponse(error_body(error, path), status_code=error_status(error, path), headers=headers)


BODY_HINT = "send fewer or smaller images (multipart avoids base64's third more)"


class BodyLimit:
    """Refuse a body that grows past ``limit`` bytes while it streams in (a chunked upload has no
    Content-Length for the middleware to check). The 413 is an HTTPException so that FastAPI's own body
    reading passes it on instead of turning it into a 400."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise StarletteHTTPException(413, f"the body exceeds {self.limit:,} bytes: {BODY_HINT}")
            return message

        await self.app(scope, limited, send)


def require_api_key(request: Request) -> None:
    """Checked by the middleware for /v1 and /v2 paths (not /v2's health probes), before any body is read or
    parsed (:func:`check_key`)."""
    keys = request.app.state.settings.api_keys
    if not keys or not needs_key(route_path(request.scope)):
        return
    check_key(request.headers.get("authorization"), request.headers.get("x-api-key"), keys, HTTP_KEY_HINT)


HTTP_KEY_HINT = "send a valid key as 'Authorization: Bearer <key>' or 'X-API-Key'"


def check_key(authorization: str | None, x_api_key: str | None, keys: Sequence[str], hint: str) -> None:
    """401 ``unauthorized`` unless the Bearer credential of ``authorization`` (or, without one,
    ``x_api_key``) is one of ``keys``: for every transport (HTTP headers, gRPC metadata), so there is one.

    The key is compared with every configured key by ``hmac.compare_digest`` (constant time) on SHA-256
    digests (so not even the length leaks), and with all of them whether or not one matched, so the time
    taken tells nothing about which key or how much of it matched. An empty key never matches, even if one
    was configured by mistake.
    """
    auth = authorization or ""
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else x_api_key
    matched = False
    if given:
        candidate = _digest(given)
        for key in keys:
            matched |= hmac.compare_digest(candidate, _digest(key))
    if not matched:
        raise ApiError("unauthorized", hint)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def needs_key(path: str) -> bool:
    """The API's routes; health, readiness, metrics, the docs and the demo page stay open."""
    path += "/"
    v2 = KSERVE_PREFIX + "/"
    return path.startswith("/v1/") or (path.startswith(v2) and not path.startswith(v2 + "health/"))


def route_path(scope: Scope) -> str:
    """The path the router matches: behind a proxy that sets ``root_path`` the ASGI path still starts with
    it, so checking ``request.url.path`` for ``/v1/`` would let ``/prefix/v1/...`` through unauthenticated."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path
