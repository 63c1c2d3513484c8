"""The gateway's one error type: an HTTP status, a stable snake_case code and a message saying how to fix it.

Domain code raises :class:`ApiError`; the app turns it into ``{"error": {"code", "message"}}`` (DESIGN §4), so
no module below the HTTP layer needs to know about FastAPI.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A client-visible failure. ``code`` is stable for clients to branch on; ``message`` is for humans."""

    def __init__(self, status: int, code: str, message: str) -> None:
        # All three go to ``Exception`` so the error pickles (process pools) and round-trips through ``args``.
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}

    @classmethod
    def bad_request(cls, code: str, message: str) -> ApiError:
        return cls(400, code, message)

    @classmethod
    def unauthorized(cls, code: str, message: str) -> ApiError:
        return cls(401, code, message)

    @classmethod
    def not_found(cls, code: str, message: str) -> ApiError:
        return cls(404, code, message)

    @classmethod
    def too_large(cls, code: str, message: str) -> ApiError:
        return cls(413, code, message)

    @classmethod
    def unsupported_media_type(cls, code: str, message: str) -> ApiError:
        return cls(415, code, message)

    @classmethod
    def unprocessable(cls, code: str, message: str) -> ApiError:
        return cls(422, code, message)

    @classmethod
    def overloaded(cls, code: str, message: str) -> ApiError:
        return cls(429, code, message)

    @classmethod
    def not_ready(cls, code: str, message: str) -> ApiError:
        return cls(503, code, message)

    @classmethod
    def timeout(cls, code: str, message: str) -> ApiError:
        return cls(504, code, message)
