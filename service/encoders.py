"""The one interface both backends give the gateway: async encoder calls, readiness, and a description.

The embedded backend runs the bundle's ONNX files in this process; the Triton backend sends the same
tensors to Triton Inference Server. The gateway keeps tokenisation, preprocessing, the text-embedding
cache and scoring either way, so the two give the same scores on the same bundle.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Protocol

import numpy as np

from service.errors import CodedError

TEXT_BATCH = 256
"""The most texts one ``encode_texts`` call gets (the runtime chunks longer lists)."""


class BackendConfigError(RuntimeError):
    """A backend setting the operator must fix; the gateway refuses to start rather than fall back."""


class BackendUnavailable(CodedError):
    """The backend cannot answer now (down, unreachable, model not loaded): worth retrying later."""

    CODE = "backend_unavailable"


class BackendError(CodedError):
    """The backend answered with an error that retrying will not fix."""

    CODE = "backend_error"


class Encoders(Protocol):
    name: str
    """``onnxruntime`` or ``triton``."""
    batches_images: bool
    """True when the backend batches concurrent image requests itself (Triton's dynamic batcher)."""
    compiles_shapes: bool
    """True when each new input shape costs a compilation (CUDA, TensorRT): batches then come in buckets."""

    def keep_image_embeddings_on(self, xp: ModuleType) -> bool:
        """Return image embeddings as ``xp`` arrays from now on (a GPU scorer's CuPy, so they never leave
        the device); False when this backend cannot."""

    async def encode_images(self, pixels: np.ndarray) -> Any:
        """L2-normalised embeddings ``(N, D)`` of uint8 ``(N, H, W, 3)`` pixels (a device array after
        ``keep_image_embeddings_on``)."""

    async def encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings ``(N, D)`` of tokenised texts."""

    async def readiness(self) -> str | None:
        """None when both encoders can serve now, else why not (for ``/readyz``)."""

    def providers(self) -> list[str]:
        """Where the encoders run: ONNX Runtime execution providers, or the Triton endpoint."""

    def version(self) -> str | None:
        """The runtime and its version, e.g. ``onnxruntime 1.32.0`` or ``triton 2.51.0``; None until known."""

    def precision(self) -> str:
        """What runs: ``fp32`` (the bundle's ``model.onnx`` files; ``fp16`` for a float16 bundle) or a
        gated lower-precision variant, ``int8`` or ``bf16`` (``LIT_PRECISION``, :mod:`service.precision`)."""

    async def close(self) -> None: ...
