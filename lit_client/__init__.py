"""Python client of the LiT zero-shot gateway (HTTP API v1, see the README): ``LitClient``, ``AsyncLitClient``
and the ``lit`` command line. Needs only httpx (and typer and rich for the command line)."""

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
    "Prediction",
]
