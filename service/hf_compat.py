"""Hugging Face Inference compatibility for the task ``zero-shot-image-classification``.

``huggingface_hub.InferenceClient(model="http://host:8000/v1/hf/zero-shot-image-classification")`` posts
to that URL exactly: ``Authorization: Bearer <api_key>`` when it has one, ``Content-Type: application/json``
and ``{"inputs": "<base64 image>", "parameters": {"candidate_labels": [...], "hypothesis_template": "..."}}``
(``hypothesis_template`` left out when not given; ``candidate_labels`` is always there, so the client never
sends a raw image body for this task). It reads back ``[{"label", "score"}, ...]``, best first.

Scoring is :meth:`Gateway.classify` with the one hypothesis template as the prompt template (the model's own
templates when none is given), so the scores equal ``/v1/classify``'s with ``templates=[template]``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from service.decode import decode_base64
from service.errors import ApiError
from service.request_bodies import parse_json, require_json
from service.routes import ERROR_RESPONSES, GatewayDep, json_request_body, with_timeout
from service.schemas import PNG_1PX, Prediction, Text

PATH = "/v1/hf/zero-shot-image-classification"
PLACEHOLDER = "{}"
DESCRIPTION = (
    "The body and answer of the Hugging Face Inference task `zero-shot-image-classification`: point "
    "`huggingface_hub.InferenceClient(model=<this URL>)` here and call "
    "`zero_shot_image_classification(image, candidate_labels=[...])`. Scores are probabilities over the "
    "candidate labels, best first."
)


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


def check_template(template: str | None) -> list[str] | None:
    if template is None:
        return None
    if template.count(PLACEHOLDER) != 1:
        raise ApiError(
            422,
            "invalid_template",
            f"hypothesis_template needs exactly one {PLACEHOLDER} where the label goes, "
            f"e.g. 'This is a photo of {PLACEHOLDER}.'",
        )
    return [template]


def build_hf_router() -> APIRouter:
    router = APIRouter(responses=ERROR_RESPONSES, tags=["Hugging Face Inference"])

    @router.post(
        PATH,
        response_model=list[Prediction],
        summary="Zero-shot image classification, Hugging Face Inference style",
        description=DESCRIPTION,
        dependencies=[Depends(require_json)],
        openapi_extra=json_request_body(ZeroShotRequest),
    )
    async def zero_shot_image_classification(request: Request, gw: GatewayDep) -> list[Prediction]:
        gw.check_room()
        body = parse_json(ZeroShotRequest, await request.body())
        templates = check_template(body.parameters.hypothesis_template)
        image = decode_base64(body.inputs)
        answer = await with_timeout(
            request, gw.classify([image], body.parameters.candidate_labels, None, templates, None)
        )
        return answer.results[0].predictions

    return router
