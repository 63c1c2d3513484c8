"""OpenAI-compatible ``POST /v1/embeddings``: texts and images from OpenAI's SDKs and the tools built on them.

``openai.OpenAI(base_url="http://host:8000/v1", api_key=...)`` then ``client.embeddings.create(model=...,
input=[...])``. The SDK asks for ``encoding_format="base64"`` unless told otherwise and decodes it back to
floats; both formats are served. Texts go through the text-embedding cache, images through the batcher, all
by one version of the model, so each embedding equals ``/v1/embed/text``'s or ``/v1/embed/image``'s. Errors
come in OpenAI's shape (see service/error_shapes.py), so the SDK raises ``BadRequestError``,
``AuthenticationError`` and the rest with our message. Which inputs are images: service/openai_inputs.py.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from service.errors import ApiError
from service.gateway import Embeddings
from service.openai_inputs import EmbeddingsRequest, Inputs, inputs_of
from service.request_bodies import parse_json, require_json
from service.routes import ERROR_RESPONSES, GatewayDep, json_request_body, with_timeout

PATH = "/v1/embeddings"


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = None
    code: str = Field(examples=["undecodable_image"])


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32 bytes")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="tokens of the texts (images count none)")
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


# OpenAI's SDKs expect 400 for every problem with the input (service/error_shapes.py maps ours to it).
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {**answer, "model": OpenAIErrorBody}
    for status, answer in ERROR_RESPONSES.items()
    if status not in (415, 422)
}
ERRORS[400] = {"model": OpenAIErrorBody, "description": "bad input: the message says what to send instead"}
ERRORS[413] = {"model": OpenAIErrorBody, "description": "the body is over the gateway's size limit"}


def build_openai_router() -> APIRouter:
    router = APIRouter(tags=["OpenAI-compatible"])

    @router.post(
        PATH,
        response_model=EmbeddingsResponse,
        responses=ERRORS,
        summary="Embeddings of texts and images, OpenAI style",
        description="OpenAI's embeddings route, with images as data URLs in `input`, with "
        '`"modality": "image"`, or as `image_url` parts (in `input` or chat-style `messages`). Point an '
        "OpenAI client's `base_url` at `/v1`.",
        dependencies=[Depends(require_json)],
        openapi_extra=json_request_body(EmbeddingsRequest),
    )
    async def embeddings(request: Request, gw: GatewayDep) -> EmbeddingsResponse:
        body = parse_json(EmbeddingsRequest, await request.body())
        inputs = inputs_of(body)
        if body.dimensions is not None:
            info = await gw.info(body.model)
            if body.dimensions != info.embed_dim:
                raise ApiError(
                    "invalid_dimensions",
                    f"dimensions={body.dimensions}, but {info.name}'s embeddings have a fixed size of "
                    f"{info.embed_dim}: leave dimensions out (or send {info.embed_dim})",
                )
        if inputs.images:
            gw.check_room()
        embedded = await with_timeout(request, gw.embeddings(inputs.texts, inputs.images, body.model))
        return _answer(embedded, inputs, body.encoding_format)

    return router


def _answer(embedded: Embeddings, inputs: Inputs, encoding_format: str) -> EmbeddingsResponse:
    rows = {"text": embedded.texts, "image": embedded.images}
    data = [
        EmbeddingData(index=i, embedding=_encoded(rows[kind][at], encoding_format))
        for i, (kind, at) in enumerate(inputs.order)
    ]
    tokens = embedded.text_tokens
    return EmbeddingsResponse(
        data=data, model=embedded.model.name, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)
    )


def _encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    values: list[float] = vector.tolist()
    return values
