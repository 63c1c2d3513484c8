"""The error body each API family's clients expect, chosen by the request's path.

Our own routes answer ``{"error": {"code", "message"}}``. The OpenAI-compatible route answers OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, so that OpenAI's SDKs raise their usual exceptions with
our message; the Open Inference Protocol (KServe v2) routes answer that protocol's ``{"error": "<message>"}``.
Our stable ``code`` is the same in every shape, and so is the status, but for one change on the OpenAI route:
OpenAI answers every problem with the input as 400, and its SDKs raise ``BadRequestError`` only for that, so
the input's 413, 415 and 422 become 400 there (a body over the size limit stays 413).
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


def error_status(error: ApiError, path: str = "") -> int:
    """The status ``error`` is answered with on ``path``."""
    if path in OPENAI_PATHS and error.status in (413, 415, 422) and error.code != "body_too_large":
        return 400
    return error.status


def error_body(error: ApiError, path: str = "") -> dict[str, Any]:
    """``error`` in the shape the API family of ``path`` (the route path, without any root path) uses."""
    if path in OPENAI_PATHS:
        kind = openai_type(error.status)
        return {"error": {"message": error.message, "type": kind, "param": None, "code": error.code}}
    if path == KSERVE_PREFIX or path.startswith(KSERVE_PREFIX + "/"):
        return {"error": error.message}
    return error.body()
