"""The error body each API family's clients expect, chosen by the request's path.

Our own routes answer ``{"error": {"code", "message"}}``. The OpenAI-compatible route answers OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, so that OpenAI's SDKs raise their usual exceptions with
our message; the Open Inference Protocol (KServe v2) routes answer that protocol's ``{"error": "<message>"}``.
The status and our stable ``code`` are the same in every shape.
"""

from __future__ import annotations

from typing import Any

from service.errors import ApiError

OPENAI_PATHS = ("/v1/embeddings",)
KSERVE_PREFIX = "/v2"


def openai_type(status: int) -> str:
    """OpenAI's ``type`` for a status: what its SDKs and users branch on besides the status."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(error: ApiError, path: str = "") -> dict[str, Any]:
    """``error`` in the shape the API family of ``path`` (the route path, without any root path) uses."""
    if path in OPENAI_PATHS:
        kind = openai_type(error.status)
        return {"error": {"message": error.message, "type": kind, "param": None, "code": error.code}}
    if path == KSERVE_PREFIX or path.startswith(KSERVE_PREFIX + "/"):
        return {"error": error.message}
    return error.body()
