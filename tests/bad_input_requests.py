"""Request building for the bad-input corpus: each builder returns a function that makes the keyword
arguments of ``httpx.Client.request`` (lazily: some bodies are tens of MB), as JSON, as multipart
form-data, or as raw bytes with hand-set headers (hand-written multipart parts, streamed chunks).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

from tests.bad_input_images import good_png

Build = Callable[[], dict[str, Any]]  # makes the keyword arguments of httpx.Client.request


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def json_body(body: Any) -> Build:
    return lambda: {"json": body}


def multipart(
    blobs: list[bytes], fields: dict[str, Any] | None = None, extra_files: list | None = None
) -> Build:
    def build() -> dict[str, Any]:
        files = [("images", (f"{i}.img", blob, "application/octet-stream")) for i, blob in enumerate(blobs)]
        return {"data": fields or {}, "files": files + (extra_files or [])}

    return build


def raw(content: bytes | Callable[[], bytes], content_type: str | None) -> Build:
    def build() -> dict[str, Any]:
        headers = {"content-type": content_type} if content_type is not None else {}
        return {"content": content() if callable(content) else content, "headers": headers}

    return build


def multipart_raw(*parts: bytes, boundary: str = "B", close: bool = True) -> Build:
    body = b"".join(parts) + (f"--{boundary}--\r\n".encode() if close else b"")
    return raw(body, f"multipart/form-data; boundary={boundary}")


def part(name: str, value: bytes, filename: str | None = None, boundary: str = "B") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def chunked(data_size: int) -> Build:
    """A JSON body of ``data_size`` bytes streamed without Content-Length."""

    def build() -> dict[str, Any]:
        def chunks() -> Iterator[bytes]:
            yield b'{"labels": ["cat"], "images": ["'
            block = b"A" * 65_536
            for _ in range(data_size // len(block)):
                yield block
            yield b'"]}'

        return {"content": chunks(), "headers": {"content-type": "application/json"}}

    return build


def classify_json(**fields: Any) -> Build:
    return json_body({"images": [b64(good_png())], **fields})
