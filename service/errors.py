"""The gateway's errors: a stable snake_case code and a message saying how to fix it, and the one table that
turns codes into HTTP statuses.

Domain code raises :class:`ApiError` (or a subclass with a fixed code: a backend down, a full queue, the
label store away); the app answers every one as ``{"error": {"code", "message"}}`` with the status
:data:`STATUS` gives its code, so no module below the HTTP layer chooses a status or knows about FastAPI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, ClassVar, TypeVar

from lit_bundle.prompts import TemplateError

T = TypeVar("T")

STATUS: dict[str, int] = {
    # the request itself
    "invalid_body": 422, "invalid_multipart": 400, "invalid_image_part": 400, "field_too_large": 413,
    "body_too_large": 413, "unsupported_media_type": 415, "unauthorized": 401, "not_found": 404,
    "method_not_allowed": 405,
    # images
    "invalid_base64": 400, "no_images": 400, "too_many_images": 413, "empty_image": 400,
    "image_too_large": 413, "image_too_many_pixels": 413, "undecodable_image": 400,
    "unsupported_image_format": 415,
    "extreme_aspect_ratio": 400,
    # labels, templates and texts
    "labels_required": 400, "empty_labels": 400, "blank_label": 400, "too_many_labels": 413,
    "label_too_long": 422, "invalid_template": 422, "invalid_label_set": 422, "unknown_label_set": 404,
    "no_texts": 400, "too_many_texts": 413,
    # the OpenAI-compatible route's input
    "invalid_input": 400, "url_not_fetched": 400, "invalid_dimensions": 400,
    # the Open Inference Protocol (KServe v2) routes' tensors
    "invalid_inference_request": 400, "invalid_binary_data": 400,
    # models
    "unknown_model": 404, "not_ready": 503,
    # capacity and time
    "overloaded": 429, "timeout": 504, "shutting_down": 503,
    # what the gateway depends on
    "backend_unavailable": 503, "backend_error": 502, "label_store_unavailable": 503, "internal_error": 500,
}  # fmt: skip


class ApiError(Exception):
    """A client-visible failure. ``code`` is stable for clients to branch on; ``message`` is for humans.
    ``status`` overrides the table only for HTTP errors the framework raised with their own status."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        if status is None and code not in STATUS:
            raise ValueError(f"error code {code!r} has no HTTP status in service.errors.STATUS")
        # All three go to ``Exception`` so the error pickles (process pools) and round-trips through ``args``.
        super().__init__(code, message, status)
        self.code, self.message, self._status = code, message, status

    @property
    def status(self) -> int:
        return self._status if self._status is not None else STATUS[self.code]

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class CodedError(ApiError):
    """An error whose class fixes its code: raised with a message only."""

    CODE: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(self.CODE, message)

    def __reduce__(self) -> tuple[type[CodedError], tuple[object, ...]]:
        return type(self), (self.message,)


def api_error(exc: Exception) -> ApiError:
    """The client-visible form of an error raised by code outside the service (prompt templates)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, TemplateError):
        return ApiError("invalid_template", str(exc))
    return ApiError("internal_error", "the server failed; see its log for the request id")


async def within(work: Awaitable[T], seconds: float, hint: str = "send fewer images") -> T:
    """``work``, or 504 ``timeout`` after ``seconds``: the request timeout, whichever transport carried it."""
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError:
        raise ApiError("timeout", f"the request took longer than {seconds:g} s: {hint}") from None
