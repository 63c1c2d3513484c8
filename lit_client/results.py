"""Typed results of the /v1 routes (the gateway's OpenAPI at /docs) and the one exception the client raises.

Each result mirrors its response body field for field, so ``dataclasses.asdict(result)`` is the server's
JSON. Fields the server adds later are ignored.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class LitError(Exception):
    """Every failure of a call: an error answer of the gateway, or no answer at all.

    ``status`` is the HTTP status (None when no answer came: then ``code`` is ``connection_error`` or
    ``timeout``); ``code`` is the gateway's stable snake_case error code (``unknown_label_set``,
    ``undecodable_image``, ``overloaded``, ...), ``message`` says how to fix it and ``request_id`` is the
    gateway's ``X-Request-ID`` for its logs.
    """

    def __init__(self, status: int | None, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(status, code, message, request_id)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}" if self.status else f"{self.code}: {self.message}"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float


@dataclass(frozen=True)
class ImageResult:
    """One image's predictions, best first."""

    predictions: list[Prediction]

    @property
    def top(self) -> Prediction:
        return self.predictions[0]


@dataclass(frozen=True)
class ClassifyResult:
    """One :class:`ImageResult` per image, in the order the images were given."""

    model: ModelRef
    results: list[ImageResult]


@dataclass(frozen=True)
class Embeddings:
    """L2-normalised embeddings, one row per image or text."""

    model: ModelRef
    dim: int
    embeddings: list[list[float]]


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: list[str]
    templates: list[str] | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class LabelSetSummary:
    name: str
    count: int
    updated_at: str


@dataclass(frozen=True)
class ModelInfo:
    """A served model. ``state`` is ``loading``, ``ready``, ``failed`` or ``unloaded``; a model that is not
    loaded has only its name, its state and, when loading failed, ``error`` (the other fields are None)."""

    name: str
    state: str = "ready"
    error: str | None = None
    version: int | None = None
    backend: str | None = None
    backend_version: str | None = None
    providers: list[str] = field(default_factory=list)
    embed_dim: int | None = None
    image_size: int | None = None
    loss: str | None = None
    templates: list[str] = field(default_factory=list)
    precision: str | None = None
    """What runs: ``fp32``, ``int8`` or ``bf16`` (``fp16`` for a float16 bundle); None when not loaded."""
    variants: list[str] = field(default_factory=list)
    """The lower-precision variants the served version has (each passed its accuracy gate)."""


@dataclass(frozen=True)
class Models(ModelInfo):
    """Every model the gateway serves (``models``, in the gateway's order) and ``default``, the name of the
    model that answers requests naming none. The default model's own
    fields are at the top level too (``Models.name``, ``Models.embed_dim``, ...), as a one-model gateway
    answered before it served several."""

    default: str = ""
    models: list[ModelInfo] = field(default_factory=list)

    def get(self, name: str) -> ModelInfo | None:
        """The model called ``name``, or None when the gateway serves none of that name."""
        return next((m for m in self.models if m.name == name), None)


def decode(kind: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as ``kind``: a dataclass above, ``list[...]``, ``X | None`` or a plain type."""
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        return [decode(item, v) for v in value]
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(kind) if a is not type(None)]
        return decode(inner, value)
    if isinstance(kind, type) and is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: decode(hints[f.name], value[f.name]) for f in fields(kind) if f.name in value})
    return value
