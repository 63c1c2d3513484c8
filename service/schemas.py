"""Request and response bodies of the HTTP API, with OpenAPI examples."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


def _unicode(text: str) -> str:
    """FastAPI's JSON parser lets ``"\\ud800"`` (a lone surrogate) through; no encoder or store takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode ({exc.reason} at {exc.start}); send UTF-8 text") from None
    return text


# A string in a request body: what the body's routes hand to the tokenizer, the label store or a response.
Text = Annotated[str, AfterValidator(_unicode)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassifyRequest(_Body):
    images: list[str] = Field(description="base64-encoded images (or data: URLs)", examples=[[PNG_1PX]])
    labels: list[Text] | None = Field(default=None, examples=[["red circle", "blue square", "green star"]])
    label_set: Text | None = Field(
        default=None, description="name of a registered label set instead of labels"
    )
    templates: list[Text] | None = Field(
        default=None,
        min_length=1,
        description="prompt templates with {} for the label (each {} is replaced); default: the model's own",
        examples=[["a photo of a {}."]],
    )
    top_k: StrictInt | None = Field(
        default=None, ge=1, description="return only the k best labels per image (a JSON integer)"
    )


class Prediction(BaseModel):
    label: str
    score: float


class ImageResult(BaseModel):
    predictions: list[Prediction]


class ModelRef(BaseModel):
    name: str
    version: int


class ClassifyResponse(BaseModel):
    model: ModelRef
    results: list[ImageResult]


class EmbedImageRequest(_Body):
    images: list[str] = Field(description="base64-encoded images", examples=[[PNG_1PX]])


class EmbedTextRequest(_Body):
    texts: list[Text] = Field(examples=[["a photo of a red circle."]])


class EmbedResponse(BaseModel):
    model: ModelRef
    dim: int
    embeddings: list[list[float]]


class LabelSetRequest(_Body):
    labels: list[Text] = Field(examples=[["red circle", "blue square"]])
    templates: list[Text] | None = Field(default=None, min_length=1, examples=[["a photo of a {}."]])


class LabelSetResponse(BaseModel):
    name: str
    labels: list[str]
    templates: list[str] | None
    created_at: str
    updated_at: str


class LabelSetSummary(BaseModel):
    name: str
    count: int
    updated_at: str


class ModelInfo(BaseModel):
    name: str
    version: int
    backend: str = Field(description="onnxruntime (embedded) or triton")
    backend_version: str | None = Field(
        default=None, description="e.g. onnxruntime 1.32.0 or triton 2.51.0; null until Triton has answered"
    )
    providers: list[str] = Field(description="ONNX Runtime execution providers, or the Triton endpoint")
    embed_dim: int
    image_size: int
    loss: str
    templates: list[str]


class ReadyResponse(BaseModel):
    status: str = Field(examples=["ready"])
    model: ModelRef
    providers: list[str] = Field(
        description="where the encoders really run: ONNX Runtime execution providers, or the Triton endpoint",
        examples=[["CUDAExecutionProvider", "CPUExecutionProvider"]],
    )


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail
