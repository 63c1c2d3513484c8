"""Python client of the LiT zero-shot gateway (HTTP API v1, described in docs/http-api.md): ``LitClient``,
``AsyncLitClient`` and the ``lit`` command line. Needs only httpx (and typer and rich for the command
line)."""

from lit_client.client import AsyncLitClient, LitClient
from lit_client.results import (
    ClassifyResult,
    Embeddings,
    ImageResult,
    LabelSet,
    LabelSetSummary,
    LitError,
    ModelInfo,
    ModelRef,
    Models,
    Prediction,
)

__all__ = [
    "AsyncLitClient",
    "ClassifyResult",
    "Embeddings",
    "ImageResult",
    "LabelSet",
    "LabelSetSummary",
    "LitClient",
    "LitError",
    "ModelInfo",
    "ModelRef",
    "Models",
    "Prediction",
]
