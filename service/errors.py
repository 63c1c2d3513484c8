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
