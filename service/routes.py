"""The /v1 routes: models, classify, embeddings and label sets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from starlette.routing import Match

from service.decode import decode_base64
from service.errors import ApiError, within
from service.gateway import Gateway
from service.label_store import valid_name
from service.request_bodies import IMAGE_BODY, is_json, parse_json, read_image_request, require_json
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
    ModelsResponse,
)

T = TypeVar("T")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` (nested models) put in place: a ``#/$defs/...``
    reference would point nowhere inside the OpenAPI document."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a JSON body that the route parses itself with :func:`parse_json`: pydantic's JSON parser
    refuses lone surrogates and stops at a nesting limit, where FastAPI's ``json.loads`` would pass the first
    on (a 500 further down) and answer the second with a bare 400."""
    return {"requestBody": {"content": {"application/json": {"schema": _schema(model)}}, "required": True}}


def image_request_body(json_model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that takes the JSON model (base64 images) or multipart file parts."""
    content = {
        "application/json": {"schema": _schema(json_model)},
        **IMAGE_BODY["requestBody"]["content"],
    }
    return {"requestBody": {"content": content, "required": True}}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "bad input", 401: "missing or wrong API key", 404: "unknown label set or model",
        413: "body, image or label list too large", 415: "unsupported media type or image format",
        422: "schema error", 429: "overloaded", 502: "the backend refused the work",
        503: "not ready, or the backend is down", 504: "timed out",
    }.items()
}  # fmt: skip


def allowed_methods(request: Request) -> str:
    """The ``Allow`` header of a 405: the methods of every route whose path matches, not just the first.

    Asks each route whether it would take the request with each method (routers included with a prefix
    answer for their own routes)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return ", ".join(allowed)


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


GatewayDep = Annotated[Gateway, Depends(gateway)]


async def with_timeout(
    request: Request, work: Awaitable[T], seconds: float | None = None, hint: str = "send fewer images"
) -> T:
    """``work``, or 504 after ``seconds`` (default ``LIT_REQUEST_TIMEOUT_S``)."""
    return await within(work, seconds or request.app.state.settings.request_timeout_s, hint)


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

    @router.get("/models", response_model=ModelsResponse, summary="Every served model, the default first")
    async def models(gw: GatewayDep) -> ModelsResponse:
        default = await gw.info()
        return ModelsResponse(**default.model_dump(), default=default.name, models=await gw.model_infos())

    @router.get("/models/{name}", response_model=ModelInfo, summary="One served model")
    async def model(name: str, gw: GatewayDep) -> ModelInfo:
        return await gw.info(name)

    @router.post(
        "/classify",
        response_model=ClassifyResponse,
        summary="Zero-shot classification of one or more images",
        openapi_extra=image_request_body(ClassifyRequest),
    )
    async def classify(request: Request, gw: GatewayDep) -> ClassifyResponse:
        gw.check_room()
        fields = await read_image_request(request)
        return await with_timeout(
            request,
            gw.classify(
                fields["images"],
                fields["labels"],
                fields["label_set"],
                fields["templates"],
                fields["top_k"],
                fields["model"],
            ),
        )

    @router.post(
        "/embed/image",
        response_model=EmbedResponse,
        summary="L2-normalised image embeddings",
        openapi_extra=image_request_body(EmbedImageRequest),
    )
    async def embed_image(request: Request, gw: GatewayDep) -> EmbedResponse:
        gw.check_room()
        if is_json(request):
            body = parse_json(EmbedImageRequest, await request.body())
            images, model = [decode_base64(s) for s in body.images], body.model
        else:
            fields = await read_image_request(request)
            images, model = fields["images"], fields["model"]
        return await with_timeout(request, gw.embed_images(images, model))

    @router.post(
        "/embed/text",
        response_model=EmbedResponse,
        summary="L2-normalised text embeddings",
        dependencies=[Depends(require_json)],
        openapi_extra=json_request_body(EmbedTextRequest),
    )
    async def embed_text(request: Request, gw: GatewayDep) -> EmbedResponse:
        body = parse_json(EmbedTextRequest, await request.body())
        return await with_timeout(request, gw.embed_texts(body.texts, body.model))

    @router.put(
        "/label-sets/{name}",
        response_model=LabelSetResponse,
        summary="Create or replace a label set",
        dependencies=[Depends(require_json)],
        openapi_extra=json_request_body(LabelSetRequest),
    )
    async def put_label_set(name: str, request: Request, gw: GatewayDep) -> Any:
        body = parse_json(LabelSetRequest, await request.body())
        if not valid_name(name):
            raise ApiError(
                "invalid_label_set",
                f"{name[:80]!r} is not a valid label set name: 1 to 64 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit",
            )
        stored = await with_timeout(
            request,
            gw.put_label_set(name, body.labels, body.templates, body.model),
            gw.settings.label_set_timeout_s,
            "register the labels in several smaller sets, or raise LIT_LABEL_SET_TIMEOUT_S",
        )
        return stored.model_dump()

    @router.get("/label-sets", response_model=list[LabelSetSummary], summary="All label sets")
    async def list_label_sets(gw: GatewayDep) -> Any:
        sets = await asyncio.to_thread(gw.store.list)
        return [{"name": s.name, "count": len(s.labels), "updated_at": s.updated_at} for s in sets]

    @router.get("/label-sets/{name}", response_model=LabelSetResponse, summary="One label set")
    async def get_label_set(name: str, gw: GatewayDep) -> Any:
        stored = await asyncio.to_thread(gw.store.get, name)
        if stored is None:
            raise ApiError("unknown_label_set", f"no label set named {name!r}")
        return stored.model_dump()

    @router.delete("/label-sets/{name}", status_code=204, summary="Delete a label set")
    async def delete_label_set(name: str, gw: GatewayDep) -> Response:
        if not await asyncio.to_thread(gw.store.delete, name):
            raise ApiError("unknown_label_set", f"no label set named {name!r}")
        return Response(status_code=204)

    return router
