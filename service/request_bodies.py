"""Reading request bodies: JSON with base64 images, or multipart/form-data with file parts."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.decode import decode_base64
from service.errors import ApiError
from service.schemas import ClassifyRequest
from service.settings import Settings

B = TypeVar("B", bound=BaseModel)


IMAGE_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "labels": {"type": "array", "items": {"type": "string"}},
                        "label_set": {"type": "string"},
                        "templates": {"type": "array", "items": {"type": "string"}},
                        "top_k": {"type": "integer", "minimum": 1},
                        "model": {"type": "string"},
                    },
                    "required": ["images"],
                }
            }
        }
    }
}


# Multipart fields that carry text; only ``images`` parts are files.
TEXT_FIELDS = ("labels", "label_set", "templates", "top_k", "model")


def is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


def require_json(request: Request) -> None:
    """For JSON-only routes: FastAPI would answer another media type with a 422 schema error."""
    if not is_json(request):
        raise ApiError("unsupported_media_type", "send the body as application/json")


def parse_json(model: type[B], raw: bytes) -> B:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError("invalid_body", f"{where}: {first['msg']} (see /docs for the schema)") from None


async def read_image_request(request: Request) -> dict[str, Any]:
    """Images and options from a JSON (base64) or multipart body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = parse_json(ClassifyRequest, await request.body())
        return {**body.model_dump(exclude={"images"}), "images": [decode_base64(s) for s in body.images]}
    if content_type == "multipart/form-data":
        settings: Settings = request.app.state.settings
        try:
            form = await request.form(max_files=settings.max_images + 1, max_fields=settings.max_labels + 100)
        except StarletteHTTPException as exc:  # Starlette's multipart parser: a limit, or malformed data
            raise multipart_error(exc, settings) from None
        parts = form.getlist("images")
        files = [f for f in parts if isinstance(f, UploadFile)]
        if len(files) != len(parts):
            raise ApiError("invalid_image_part", "each 'images' part must be a file upload")
        for name in TEXT_FIELDS:
            if any(isinstance(v, UploadFile) for v in form.getlist(name)):
                raise ApiError("invalid_body", f"'{name}' must be a text field, not a file part (see /docs)")
        raw_top_k = str(form.get("top_k") or "")  # a str or absent: file parts were refused above
        try:
            top_k = int(raw_top_k) if raw_top_k else None
        except ValueError:
            raise ApiError("invalid_body", "top_k must be an integer (see /docs)") from None
        if top_k is not None and top_k < 1:
            raise ApiError("invalid_body", "top_k must be at least 1 (see /docs)")
        return {
            "images": [await f.read() for f in files],
            "labels": [str(v) for v in form.getlist("labels")] or None,
            "label_set": form.get("label_set") or None,
            "templates": [str(v) for v in form.getlist("templates")] or None,
            "top_k": top_k,
            "model": form.get("model") or None,
        }
    raise ApiError(
        "unsupported_media_type", "send application/json (base64 images) or multipart/form-data (files)"
    )


def multipart_error(exc: StarletteHTTPException, settings: Settings) -> Exception:
    detail = str(exc.detail)
    if exc.status_code != 400:  # e.g. the streamed body limit (413)
        return exc
    if detail.startswith("Too many files"):
        return ApiError("too_many_images", f"too many image parts; the limit is {settings.max_images}")
    if detail.startswith("Too many fields"):
        return ApiError("too_many_labels", f"too many form fields; at most {settings.max_labels} labels")
    if detail.startswith("Part exceeded"):
        return ApiError("field_too_large", f"{detail} Send images as file parts")
    return ApiError("invalid_multipart", f"{detail} Send a well-formed multipart/form-data body")
