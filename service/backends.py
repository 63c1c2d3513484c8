"""The backend ``LIT_BACKEND`` names, opened on one bundle version: the embedded ONNX Runtime sessions or a
Triton client (the ``triton`` extra)."""

from __future__ import annotations

import asyncio

from lit_bundle.repository import Bundle
from service.encoders import Encoders
from service.settings import Settings


async def open_encoders(bundle: Bundle, settings: Settings) -> Encoders:
    """The backend ``settings`` ask for, serving ``bundle``'s version."""
    if settings.backend == "triton":
        from service.triton_backend import TritonEncoders  # tritonclient is the optional triton extra

        return TritonEncoders.from_settings(bundle, settings)
    from service.onnx_backend import OnnxEncoders

    return await asyncio.to_thread(
        OnnxEncoders,
        bundle,
        settings.providers,
        settings.intra_op_threads,
        settings.max_batch_size,
        settings.trt_cache_dir,
        settings.precision,
    )
