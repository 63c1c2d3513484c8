"""The FastAPI application factory: routes, errors, API keys, request ids, metrics and logs."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.decode import decode_base64
from service.errors import ApiError
from service.gateway import Gateway
from service.logs import access_fields_line
from service.metrics import Metrics
from service.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    EmbedImageRequest,
    EmbedResponse,
    EmbedTextRequest,
    ErrorBody,
    LabelSetRequest,
    LabelSetResponse,
    LabelSetSummary,
    ModelInfo,
)
from service.settings import Settings

log = logging.getLogger("service.access")
T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "bad input", 401: "missing or wrong API key", 404: "unknown label set",
        413: "body, image or label list too large", 415: "unsupported media type or image format",
        422: "schema error", 429: "overloaded", 503: "not ready", 504: "timed out",
    }.items()
}  # fmt: skip

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
                        "top_k": {"type": "integer"},
                    },
                    "required": ["images"],
                }
            }
        }
    }
}


def error_response(error: ApiError, request_id: str | None = None) -> JSONResponse:
    headers = {"X-Request-ID": request_id} if request_id else {}
    if error.status == 429:
        headers["Retry-After"] = "1"
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


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


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(gateway)]


def require_api_key(request: Request) -> None:
    """Checked by the middleware for /v1 paths, before any body is read or parsed."""
    keys = request.app.state.settings.api_keys
    if not keys or not (request.url.path + "/").startswith("/v1/"):
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key")
    if given is None or not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
        raise ApiError(
            401, "unauthorized", "send a valid key as 'Authorization: Bearer <key>' or 'X-API-Key'"
        )


async def with_timeout(request: Request, work: Awaitable[T]) -> T:
    seconds = request.app.state.settings.request_timeout_s
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError:
        raise ApiError(
            504, "timeout", f"the request took longer than {seconds:g} s: send fewer images"
        ) from None


def require_json(request: Request) -> None:
    """For JSON-only routes: FastAPI would answer another media type with a 422 schema error."""
    if not _is_json(request):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")


def parse_json(model: type[B], raw: bytes) -> B:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(422, "invalid_body", f"{where}: {first['msg']} (see /docs for the schema)") from None


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
        files = form.getlist("images")
        if any(not isinstance(f, UploadFile) for f in files):
            raise ApiError(400, "invalid_image_part", "each 'images' part must be a file upload")
        top_k = form.get("top_k")
        try:
            top_k = int(top_k) if top_k else None
        except ValueError:
            raise ApiError(422, "invalid_body", "top_k must be an integer (see /docs)") from None
        if top_k is not None and top_k < 1:
            raise ApiError(422, "invalid_body", "top_k must be at least 1 (see /docs)")
        return {
            "images": [await f.read() for f in files],
            "labels": [str(v) for v in form.getlist("labels")] or None,
            "label_set": form.get("label_set") or None,
            "templates": [str(v) for v in form.getlist("templates")] or None,
            "top_k": top_k,
        }
    raise ApiError(
        415, "unsupported_media_type", "send application/json (base64 images) or multipart/form-data (files)"
    )


def multipart_error(exc: StarletteHTTPException, settings: Settings) -> Exception:
    detail = str(exc.detail)
    if exc.status_code != 400:  # e.g. the streamed body limit (413)
        return exc
    if detail.startswith("Too many files"):
        return ApiError(413, "too_many_images", f"too many image parts; the limit is {settings.max_images}")
    if detail.startswith("Too many fields"):
        return ApiError(413, "too_many_labels", f"too many form fields; at most {settings.max_labels} labels")
    if detail.startswith("Part exceeded"):
        return ApiError(413, "field_too_large", f"{detail} Send images as file parts")
    return ApiError(400, "invalid_multipart", f"{detail} Send a well-formed multipart/form-data body")


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

    @router.get("/models", response_model=ModelInfo, summary="The active model")
    async def models(gw: GatewayDep) -> ModelInfo:
        return gw.info()

    @router.post(
        "/classify",
        response_model=ClassifyResponse,
        summary="Zero-shot classification of one or more images",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": ClassifyRequest.model_json_schema()},
                    **IMAGE_BODY["requestBody"]["content"],
                },
                "required": True,
            }
        },
    )
    async def classify(request: Request, gw: GatewayDep) -> ClassifyResponse:
        fields = await read_image_request(request)
        return await with_timeout(
            request,
            gw.classify(
                fields["images"], fields["labels"], fields["label_set"], fields["templates"], fields["top_k"]
            ),
        )

    @router.post(
        "/embed/image",
        response_model=EmbedResponse,
        summary="L2-normalised image embeddings",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": EmbedImageRequest.model_json_schema()},
                    **IMAGE_BODY["requestBody"]["content"],
                },
                "required": True,
            }
        },
    )
    async def embed_image(request: Request, gw: GatewayDep) -> EmbedResponse:
        fields = await read_image_request(request) if not _is_json(request) else None
        if fields is None:
            body = parse_json(EmbedImageRequest, await request.body())
            images = [decode_base64(s) for s in body.images]
        else:
            images = fields["images"]
        return gw.embed_response(await with_timeout(request, gw.embed_image_bytes(images)))

    @router.post(
        "/embed/text",
        response_model=EmbedResponse,
        summary="L2-normalised text embeddings",
        dependencies=[Depends(require_json)],
    )
    async def embed_text(body: EmbedTextRequest, request: Request, gw: GatewayDep) -> EmbedResponse:
        return gw.embed_response(await with_timeout(request, gw.embed_texts(body.texts)))

    @router.put(
        "/label-sets/{name}",
        response_model=LabelSetResponse,
        summary="Create or replace a label set",
        dependencies=[Depends(require_json)],
    )
    async def put_label_set(name: str, body: LabelSetRequest, request: Request, gw: GatewayDep) -> Any:
        stored = await with_timeout(request, gw.put_label_set(name, body.labels, body.templates))
        return stored.model_dump()

    @router.get("/label-sets", response_model=list[LabelSetSummary], summary="All label sets")
    async def list_label_sets(gw: GatewayDep) -> Any:
        sets = await asyncio.to_thread(gw.store.list)
        return [{"name": s.name, "count": len(s.labels), "updated_at": s.updated_at} for s in sets]

    @router.get("/label-sets/{name}", response_model=LabelSetResponse, summary="One label set")
    async def get_label_set(name: str, gw: GatewayDep) -> Any:
        stored = await asyncio.to_thread(gw.store.get, name)
        if stored is None:
            raise ApiError(404, "unknown_label_set", f"no label set named {name!r}")
        return stored.model_dump()

    @router.delete("/label-sets/{name}", status_code=204, summary="Delete a label set")
    async def delete_label_set(name: str, gw: GatewayDep) -> Response:
        if not await asyncio.to_thread(gw.store.delete, name):
            raise ApiError(404, "unknown_label_set", f"no label set named {name!r}")
        return Response(status_code=204)

    return router


def _is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


def create_app(settings: Settings) -> FastAPI:
    """A gateway for ``settings``; the model loads when the app starts (see ``/readyz``)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        gw = Gateway(settings, metrics)
        app.state.gateway = gw
        await gw.start()
        yield
        await gw.stop()

    app = FastAPI(
        title="LiT zero-shot image classification",
        version="1",
        lifespan=lifespan,
        description="Classify images into any labels, embed images and texts, and manage label sets.",
    )
    app.state.settings = settings
    app.state.metrics = metrics
    # Added before ``observe`` so it sits inside it: the 413 is raised in the route, not in the task
    # BaseHTTPMiddleware reads the body from (which would surface as an exception group and a 500).
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc, getattr(request.state, "request_id", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return error_response(ApiError(422, "invalid_body", f"{where}: {first['msg']} (see /docs)"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "http_error"
        )
        return error_response(ApiError(exc.status_code, code, str(exc.detail)))

    @app.middleware("http")
    async def observe(request: Request, call_next):
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = request_id
        began = time.perf_counter()
        length = request.headers.get("content-length")
        try:
            require_api_key(request)
            if length and length.isdigit() and int(length) > settings.max_body_bytes:
                raise ApiError(
                    413, "body_too_large", f"the body exceeds {settings.max_body_bytes:,} bytes: {BODY_HINT}"
                )
        except ApiError as exc:
            response = error_response(exc, request_id)
        else:
            try:
                response = await call_next(request)
            except Exception:
                log.exception("unhandled error (request %s)", request_id)
                response = error_response(
                    ApiError(500, "internal_error", "unexpected error; see server logs")
                )
        elapsed = time.perf_counter() - began
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.request_duration.labels(path).observe(elapsed)
        response.headers["X-Request-ID"] = request_id
        fields = {
            "request_id": request_id, "method": request.method, "path": request.url.path,
            "status": response.status_code, "ms": round(1000 * elapsed, 1),
        }  # fmt: skip
        log.info(access_fields_line(fields), extra={"fields": fields})
        return response

    @app.get("/healthz", summary="Liveness: 200 while the process runs")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: 200 once a model is loaded and its backend answers")
    async def readyz(request: Request) -> JSONResponse:
        gw: Gateway = request.app.state.gateway
        if gw.runtime is None:
            reason = gw.load_error or "the model is still loading"
            return error_response(ApiError(503, "not_ready", reason))
        m = gw.runtime.bundle.manifest
        return JSONResponse({"status": "ready", "model": {"name": m.name, "version": m.version}})

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(build_router())
    return app
