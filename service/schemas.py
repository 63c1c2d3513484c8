"""Request and response bodies of the HTTP API, with OpenAPI examples."""

from __future__ import annotations

from typing import Annotated, Literal

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
    model: Text | None = Field(
        default=None,
        description="the model to use (see GET /v1/models); default: the gateway's default model",
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
    model: Text | None = Field(
        default=None,
        description="the model to use (see GET /v1/models); default: the gateway's default model",
    )


class EmbedTextRequest(_Body):
    texts: list[Text] = Field(examples=[["a photo of a red circle."]])
    model: Text | None = Field(
        default=None,
        description="the model to use (see GET /v1/models); default: the gateway's default model",
    )


class EmbedResponse(BaseModel):
    model: ModelRef
    dim: int
    embeddings: list[list[float]]


class LabelSetRequest(_Body):
    labels: list[Text] = Field(examples=[["red circle", "blue square"]])
    templates: list[Text] | None = Field(default=None, min_length=1, examples=[["a photo of a {}."]])
    model: Text | None = Field(
        default=None,
        description="the model that encodes the set at once (others encode it on first use); default: the "
        "default model",
    )


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
    """A served model; a model that is not loaded (failed, or unloaded to save memory) has only its name,
    state and, for a failure, the error."""

    name: str
    state: Literal["loading", "ready", "failed", "unloaded"] = "ready"
    error: str | None = Field(default=None, description="why the model could not be loaded")
    version: int | None = None
    backend: str | None = Field(default=None, description="onnxruntime (embedded) or triton")
    backend_version: str | None = Field(
        default=None, description="e.g. onnxruntime 1.32.0 or triton 2.51.0; null until Triton has answered"
    )
    providers: list[str] = Field(
        default_factory=list, description="ONNX Runtime execution providers, or the Triton endpoint"
    )
    precision: str | None = Field(
        default=None,
        description="what runs (LIT_PRECISION): fp32 (the bundle's model.onnx files; fp16 for a float16 "
        "bundle), or a lower-precision variant, int8 or bf16; null when not loaded",
        examples=["int8"],
    )
    variants: list[str] = Field(
        default_factory=list,
        description="the lower-precision variants the served version has, each passed its accuracy gate",
        examples=[["int8"]],
    )
    embed_dim: int | None = None
    image_size: int | None = None
    loss: str | None = None
    templates: list[str] = Field(default_factory=list)


class ModelsResponse(ModelInfo):
    """The default model's description (what clients of a one-model gateway read) and every model's."""

    default: str = Field(description="the model that answers requests naming none")
    models: list[ModelInfo]


class ReadyResponse(BaseModel):
    status: str = Field(examples=["ready"])
    model: ModelRef = Field(description="the default model")
    providers: list[str] = Field(
        description="where the default model's encoders really run: ONNX Runtime execution providers, or the "
        "Triton endpoint",
        examples=[["CUDAExecutionProvider", "CPUExecutionProvider"]],
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="each model's state: ready, or why it is not",
        examples=[{"lit_demo": "ready"}],
    )


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail
