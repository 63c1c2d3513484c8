"""The Open Inference Protocol (KServe v2) over HTTP, so that ``tritonclient.http`` and other v2 clients work.

Each served model NAME is two protocol models (bundle names never hold a dot, so neither collides):

- ``NAME``, zero-shot classification: inputs ``images`` BYTES [N] (encoded image files), ``labels`` BYTES [L]
  (UTF-8; or the request parameter ``label_set``) and optionally ``templates`` BYTES [T]; output ``scores``
  FP32 [N, L], each row the probabilities in the labels' order, as ``/v1/classify`` scores them.
- ``NAME.embed``, embeddings: inputs ``images`` BYTES [N] and/or ``texts`` BYTES [M]; outputs
  ``image_embeddings`` FP32 [N, D] and/or ``text_embeddings`` FP32 [M, D], both by one model version.

Errors are the protocol's ``{"error": "<message>"}`` (service/error_shapes.py) with our usual statuses; API
keys apply as on /v1, but not to the health probes. The tensor codec is service/kserve_tensors.py.
"""

from __future__ import annotations

from importlib import metadata
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request, Response

from service.errors import ApiError
from service.gateway import Gateway
from service.kserve_schemas import (
    InferRequest,
    InferResponse,
    KServeError,
    Live,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
    TensorMetadata,
    TensorSpec,
)
from service.kserve_tensors import (
    BINARY_MEDIA_TYPE,
    HEADER_LENGTH,
    invalid,
    read_request,
    write_response,
)
from service.kserve_tensors import Request as Inference
from service.routes import ERROR_RESPONSES, GatewayDep, json_request_body, with_timeout
from service.schemas import ModelRef

EMBED = ".embed"
IMAGES, LABELS, TEMPLATES, TEXTS = (
    TensorSpec(n, "BYTES", (-1,)) for n in ("images", "labels", "templates", "texts")
)
CLASSIFY_INPUTS = (IMAGES, LABELS, TEMPLATES)
EMBED_INPUTS = (IMAGES, TEXTS)
EMBED_SOURCES = {"image_embeddings": "images", "text_embeddings": "texts"}  # output -> the input it embeds
Arrays = dict[str, np.ndarray]


def classify_outputs() -> tuple[TensorSpec, ...]:
    return (TensorSpec("scores", "FP32", (-1, -1)),)


def embed_outputs(dim: int = -1) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, "FP32", (-1, dim)) for name in EMBED_SOURCES)


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


def server_version() -> str:
    try:
        return metadata.version("lit-zeroshot")
    except metadata.PackageNotFoundError:
        return "0"


def build_kserve_router() -> APIRouter:
    router = APIRouter(prefix="/v2", responses=KSERVE_ERRORS, tags=["Open Inference Protocol"])

    @router.get("", response_model=ServerMetadata, summary="Server metadata")
    async def server_metadata() -> ServerMetadata:
        extensions = ["binary_tensor_data", "parameters"]
        return ServerMetadata(name="lit-zeroshot", version=server_version(), extensions=extensions)

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


def model_of(gw: Gateway, name: str) -> tuple[str, bool]:
    """The served model behind a protocol model name, and whether it is the ``.embed`` one."""
    base, embed = (name.removesuffix(EMBED), True) if name.endswith(EMBED) else (name, False)
    if not gw.models.hosts:
        gw.models.host(base)  # 503 not_ready: no model discovered (yet)
    if base not in gw.models.hosts:
        served = ", ".join(f"{n}, {n}{EMBED}" for n in gw.models.hosts)
        raise ApiError("unknown_model", f"no model named {name[:80]!r}; this gateway serves {served}")
    return base, embed


def check_version(name: str, version: str | None, served: int | None) -> None:
    """404 for a version other than the served one; 503 while no version is loaded to compare with."""
    if version is None:
        return
    if served is None:
        raise ApiError("not_ready", f"model {name!r} is not loaded; its version is known once it is")
    if version != str(served):
        raise ApiError(
            "unknown_model",
            f"model {name!r} has no version {version[:20]!r} here; it serves version {served} "
            f"(use /v2/models/{name}/versions/{served}/... or leave the version out)",
        )


async def describe(gw: Gateway, name: str, version: str | None) -> ModelMetadata:
    base, embed = model_of(gw, name)
    info = await gw.info(base)
    check_version(name, version, info.version)
    inputs, outputs = (EMBED_INPUTS, embed_outputs(info.embed_dim or -1)) if embed else (
        CLASSIFY_INPUTS, classify_outputs()
    )  # fmt: skip
    return ModelMetadata(
        name=name,
        versions=[] if info.version is None else [str(info.version)],
        platform="lit_embedding" if embed else "lit_zeroshot",
        inputs=[TensorMetadata(**spec.metadata()) for spec in inputs],
        outputs=[TensorMetadata(**spec.metadata()) for spec in outputs],
    )


async def readiness(gw: Gateway, name: str, version: str | None) -> ModelReady:
    host = gw.models.host(model_of(gw, name)[0])
    reason = await host.readiness()
    served = host.served
    if served is not None:
        check_version(name, version, served.manifest.version)
    if reason is not None:
        raise ApiError("not_ready", f"model {name!r} is not ready: {reason}")
    return ModelReady(name=name, ready=True)


async def answer(request: Request, gw: Gateway, name: str, version: str | None) -> Response:
    base, embed = model_of(gw, name)
    served = gw.models.hosts[base].served
    if served is not None:  # an unloaded model loads first; its version is checked after
        check_version(name, version, served.manifest.version)
    gw.check_room()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(
            "unsupported_media_type", f"Content-Encoding {encoding[:20]!r}: send the body uncompressed"
        )
    inputs, outputs = (EMBED_INPUTS, embed_outputs()) if embed else (CLASSIFY_INPUTS, classify_outputs())
    parsed = read_request(await request.body(), request.headers.get(HEADER_LENGTH), inputs, outputs)
    work = embeddings(gw, base, parsed) if embed else scores(gw, base, parsed)
    model, arrays = await with_timeout(request, work)
    check_version(name, version, model.version)  # a new version may have taken over meanwhile
    head = {"model_name": name, "model_version": str(model.version)}
    if parsed.id is not None:
        head["id"] = parsed.id
    wanted = {
        output: (arrays[output], binary) for output, binary in parsed.outputs.items() if output in arrays
    }
    content, media_type, headers = write_response(head, wanted)
    return Response(content, media_type=media_type, headers=headers)


async def scores(gw: Gateway, model: str, request: Inference) -> tuple[ModelRef, Arrays]:
    label_set = request.parameters.get("label_set")
    if label_set is not None and not isinstance(label_set, str):
        raise invalid("parameter label_set must be a string: the name of a registered label set")
    if "images" not in request.inputs:
        raise invalid("missing input 'images': send the encoded image files as BYTES [N]")
    images = request.inputs["images"].images()
    labels = request.inputs["labels"].texts() if "labels" in request.inputs else None
    templates = request.inputs["templates"].texts() if "templates" in request.inputs else None
    if templates == []:
        raise invalid("input 'templates' is empty: send at least one, or leave it out for the model's own")
    result = await gw.scores(images, labels, label_set, templates, model)
    probabilities = result.probabilities
    if labels is not None and result.labels != labels:  # stripped and made unique: one column per label sent
        column = {label: i for i, label in enumerate(result.labels)}
        probabilities = probabilities[:, [column[label.strip()] for label in labels]]
    return result.model, {"scores": probabilities}


async def embeddings(gw: Gateway, model: str, request: Inference) -> tuple[ModelRef, Arrays]:
    if not request.inputs:
        raise invalid("send an 'images' input (encoded image files), a 'texts' input (UTF-8) or both")
    for output, source in EMBED_SOURCES.items():
        tensor = request.inputs.get(source)
        if tensor is None and request.named_outputs and output in request.outputs:
            raise invalid(
                f"output {output!r} needs the input {source!r}: send it, or do not ask for {output!r}"
            )
        if tensor is not None and not tensor.elements:
            code = "no_images" if source == "images" else "no_texts"
            raise ApiError(code, f"input {source!r} has no elements: send at least one, or leave it out")
    images = request.inputs["images"].images() if "images" in request.inputs else []
    texts = request.inputs["texts"].texts() if "texts" in request.inputs else []
    result = await gw.embeddings(texts, images, model)
    arrays = {"image_embeddings": result.images, "text_embeddings": result.texts}
    return result.model, {
        out: arrays[out] for out, source in EMBED_SOURCES.items() if source in request.inputs
    }
