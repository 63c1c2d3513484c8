"""The demo web page at ``/``: plain HTML, JavaScript and CSS from ``service/static`` (no build step, no CDN).

The page calls the gateway's own ``/v1`` API from the browser. Its routes stay out of the OpenAPI document
and need no API key (the page asks for one and sends it with its ``/v1`` calls).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.errors import ApiError

STATIC = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything the page loads comes from this server; images the user picks are shown from blob: URLs.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _files(folder: Path) -> dict[str, Path]:
    """The servable files, by name: only these, never a path a client makes up."""
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in MEDIA_TYPES}


def build_web_router(folder: Path = STATIC) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    files = _files(folder)

    def serve(name: str) -> FileResponse:
        path = files.get(name)
        if path is None:
            raise ApiError("not_found", f"no file {name[:80]!r} here; the demo page is at /")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)

    @router.get("/")
    async def index() -> FileResponse:
        return serve("index.html")

    @router.get("/static/{name}")
    async def static(name: str) -> FileResponse:
        return serve(name)

    return router
