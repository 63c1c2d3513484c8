"""Hugging Face Inference compatibility for the task ``zero-shot-image-classification``.

``huggingface_hub.InferenceClient(model="http://host:8000/v1/hf/zero-shot-image-classification")`` posts
to that URL exactly: ``Authorization: Bearer <api_key>`` when it has one, ``Content-Type: application/json``
and ``{"inputs": "<base64 image>", "parameters": {"candidate_labels": [...], "hypothesis_template": "..."}}``
(``hypothesis_template`` left out when not given; ``candidate_labels`` is always there, so the client never
sends a raw image body for this task). It reads back ``[{"label", "score"}, ...]``, best first.

Scoring is :meth:`Gateway.classify` with the one hypothesis template as the prompt template (the model's own
templates when none is given), so the scores equal ``/v1/classify``'s with ``templates=[template]``. A gateway
serving several models answers by the default one at that URL and by any other at
``/v1/hf/<model>/zero-shot-image-classification``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from fastapi import APIRouter, Depends, Request, params
from pydantic import BaseModel, ConfigDict, Field

from service.decode import decode_base64
from service.gateway import Gateway
from service.request_bodies import parse_json, require_json
from service.routes import ERROR_RESPONSES, GatewayDep, json_request_body, with_timeout
from service.schemas import PNG_1PX, Prediction, Text

PATH = "/v1/hf/zero-shot-image-classification"
MODEL_PATH = "/v1/hf/{model}/zero-shot-image-classification"
DESCRIPTION = (
    "The body and answer of the Hugging Face Inference task `zero-shot-image-classification`: point "
    "`huggingface_hub.InferenceClient(model=<this URL>)` here and call "
    "`zero_shot_image_classification(image, candidate_labels=[...])`. Scores are probabilities over the "
    "candidate labels, best first."
)


class _RouteOptions(TypedDict):
    """The keyword arguments both routes share, as ``APIRouter.post`` types them."""

    response_model: Any
    description: str
    dependencies: Sequence[params.Depends]
    openapi_extra: dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ZeroShotParameters(_Strict):
    candidate_labels: list[Text] = Field(
        description="the labels to choose from", examples=[["red circle", "blue square", "green star"]]
    )
    hypothesis_template: Text | None = Field(
        default=None,
        description="the prompt, with one {} where the label goes; default: the model's own prompt templates",
        examples=["This is a photo of {}."],
    )


class ZeroShotRequest(_Strict):
    inputs: str = Field(description="one base64-encoded image (or a data: URL)", examples=[PNG_1PX])
    parameters: ZeroShotParameters


def build_hf_router() -> APIRouter:
    router = APIRouter(responses=ERROR_RESPONSES, tags=["Hugging Face Inference"])

    async def answer(request: Request, gw: Gateway, model: str | None) -> list[Prediction]:
        gw.check_room()
        body = parse_json(ZeroShotRequest, await request.body())
        template = body.parameters.hypothesis_template
        image = decode_base64(body.inputs)
        answer = await with_timeout(
            request,
            gw.classify(
                [image], body.parameters.candidate_labels, None, [template] if template else None, None, model
            ),
        )
        return answer.results[0].predictions

    route: _RouteOptions = {
        "response_model": list[Prediction],
        "description": DESCRIPTION,
        "dependencies": [Depends(require_json)],
        "openapi_extra": json_request_body(ZeroShotRequest),
    }

    @router.post(PATH, summary="Zero-shot image classification, Hugging Face Inference style", **route)
    async def default_model(request: Request, gw: GatewayDep) -> list[Prediction]:
        return await answer(request, gw, None)

    @router.post(MODEL_PATH, summary="The same, by a named model", **route)
    async def named_model(model: str, request: Request, gw: GatewayDep) -> list[Prediction]:
        return await answer(request, gw, model)

    return router
