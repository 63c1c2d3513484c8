"""The Open Inference Protocol (KServe v2) over HTTP, so that ``tritonclient.http`` and other v2 clients work.

The protocol models (``NAME`` for zero-shot scores, ``NAME.embed`` for embeddings) and what inference
computes are service/kserve_models.py, shared with the gRPC transport (service/kserve_grpc.py). Requests are
read by service/kserve_tensors.py; :func:`write_response` writes the answer. Errors are the protocol's
``{"error": "<message>"}`` (service/error_shapes.py) with our usual statuses; API keys apply as on /v1, but
not to the health probes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request, Response

from service.errors import ApiError
from service.gateway import Gateway
from service.kserve_models import admit, describe, infer, readiness
from service.kserve_models import server_metadata as protocol_server_metadata
from service.kserve_schemas import (
    InferRequest,
    InferResponse,
    KServeError,
    Live,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
)
from service.kserve_tensors import BINARY_MEDIA_TYPE, HEADER_LENGTH, read_request
from service.routes import ERROR_RESPONSES, GatewayDep, json_request_body

KSERVE_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {**spec, "model": KServeError} for status, spec in ERROR_RESPONSES.items()
}
Name = Annotated[
    str, Path(description="NAME (zero-shot classification) or NAME.embed (embeddings)", examples=["lit_demo"])
]
Version = Annotated[str, Path(description="the served version (see GET /v2/models/{name})", examples=["1"])]
INFER_DESCRIPTION = (
    "Zero-shot classification (`NAME`: inputs `images`, `labels` or the parameter `label_set`, optional "
    "`templates`; output `scores` FP32 [N, L]) or embeddings (`NAME.embed`: inputs `images` and/or `texts`; "
    "outputs `image_embeddings`, `text_embeddings` FP32 [N, D]). Every input is BYTES [N]; in JSON, images "
    "are base64 strings. With the binary tensor data extension (`Inference-Header-Content-Length`) inputs "
    "and outputs travel as raw bytes after the JSON header. See docs/kserve.md."
)
INFER_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": HEADER_LENGTH,
            "in": "header",
            "required": False,
            "description": "binary tensor data extension: the length of the JSON header in bytes",
            "schema": {"type": "integer", "minimum": 0},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            **json_request_body(InferRequest)["requestBody"]["content"],
            BINARY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    },
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the outputs: JSON, or with binary outputs the JSON header and then their bytes",
        "content": {BINARY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "headers": {HEADER_LENGTH: {"description": "with binary outputs: the JSON header's length",
                                    "schema": {"type": "integer"}}},
    }
}  # fmt: skip


def build_kserve_router() -> APIRouter:
    router = APIRouter(prefix="/v2", responses=KSERVE_ERRORS, tags=["Open Inference Protocol"])

    @router.get("", response_model=ServerMetadata, summary="Server metadata")
    async def server_metadata() -> ServerMetadata:
        return protocol_server_metadata()

    @router.get("/health/live", response_model=Live, summary="Liveness: 200 while the process runs")
    async def live() -> Live:
        return Live(live=True)

    @router.get("/health/ready", response_model=Ready, summary="Readiness: 200 once the default model serves")
    async def ready(gw: GatewayDep) -> Ready:
        reason, _ = await gw.readiness()
        if reason is not None:
            raise ApiError("not_ready", reason)
        return Ready(ready=True)

    @router.get("/models/{name}", response_model=ModelMetadata, summary="Model metadata")
    async def model_metadata(name: Name, gw: GatewayDep) -> ModelMetadata:
        return await describe(gw, name, None)

    @router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, summary="Model metadata")
    async def version_metadata(name: Name, version: Version, gw: GatewayDep) -> ModelMetadata:
        return await describe(gw, name, version)

    @router.get("/models/{name}/ready", response_model=ModelReady, summary="Model readiness")
    async def model_ready(name: Name, gw: GatewayDep) -> ModelReady:
        return await readiness(gw, name, None)

    @router.get(
        "/models/{name}/versions/{version}/ready", response_model=ModelReady, summary="Model readiness"
    )
    async def version_ready(name: Name, version: Version, gw: GatewayDep) -> ModelReady:
        return await readiness(gw, name, version)

    route: dict[str, Any] = {
        "response_model": InferResponse,
        "responses": INFER_RESPONSES,
        "description": INFER_DESCRIPTION,
        "openapi_extra": INFER_OPENAPI,
    }

    @router.post("/models/{name}/infer", summary="Inference", **route)
    async def infer(name: Name, request: Request, gw: GatewayDep) -> Response:
        return await answer(request, gw, name, None)

    @router.post("/models/{name}/versions/{version}/infer", summary="Inference by a version", **route)
    async def version_infer(name: Name, version: Version, request: Request, gw: GatewayDep) -> Response:
        return await answer(request, gw, name, version)

    return router


async def answer(request: Request, gw: Gateway, name: str, version: str | None) -> Response:
    target = admit(gw, name, version)  # before the body is read
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(
            "unsupported_media_type", f"Content-Encoding {encoding[:20]!r}: send the body uncompressed"
        )
    body = await request.body()
    parsed = read_request(body, request.headers.get(HEADER_LENGTH), target.inputs, target.outputs)
    model, arrays = await infer(gw, target, parsed, request.app.state.settings.request_timeout_s)
    head = {"model_name": name, "model_version": str(model.version)}
    if parsed.id is not None:
        head["id"] = parsed.id
    content, media_type, headers = write_response(
        head, {output: (values, parsed.outputs[output]) for output, values in arrays.items()}
    )
    return Response(content, media_type=media_type, headers=headers)


def write_response(
    head: dict[str, Any], outputs: Mapping[str, tuple[np.ndarray, bool]]
) -> tuple[bytes, str, dict[str, str]]:
    """The response body, its media type and headers: FP32 outputs as JSON ``data`` or, for those marked
    binary, little-endian after the JSON header (whose length ``Inference-Header-Content-Length`` gives)."""
    described: list[dict[str, Any]] = []
    binary: list[bytes] = []
    for name, (values, as_binary) in outputs.items():
        output: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(values.shape)}
        if as_binary:
            raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
            output["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            output["data"] = values.astype(np.float32).ravel().tolist()
        described.append(output)
    header = json.dumps({**head, "outputs": described}, separators=(",", ":")).encode()
    if not binary:
        return header, "application/json", {}
    return header + b"".join(binary), BINARY_MEDIA_TYPE, {HEADER_LENGTH: str(len(header))}
