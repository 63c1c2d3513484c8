"""The images of a request, from bytes to embeddings: counted into the backlog, decoded in the decode pool,
encoded in batches.

Call chain (``embed``): backlog ``hold`` -> decode pool (per image, at the served version's image size:
``decode_image``, or nvImageCodec on the GPU with ``LIT_DECODE_DEVICE``) -> the served version's
:class:`~service.batcher.Batcher` (embedded backend) or the backend directly (Triton batches itself) ->
embeddings, on the scoring device when encoder and scorer share a GPU.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from service.backlog import Backlog
from service.batcher import Batcher
from service.decode import DecodeLimits
from service.errors import ApiError
from service.gpu_decode import GpuDecoder, decoder_for_device
from service.metrics import Metrics
from service.runtime import ModelRuntime
from service.scoring import Scorer
from service.served_model import ServedModel
from service.settings import Settings

log = logging.getLogger(__name__)


def lower_thread_priority(niceness: int) -> None:
    """Raise the calling thread's nice value by ``niceness`` (Linux, where each thread has its own).

    Decode threads run below the encoder: on a CPU backend, a decode that preempts one of ONNX Runtime's
    intra-op threads stalls the others at the op's barrier, so at equal priority decoding costs the
    encoder far more than its own CPU time. Niced, decoding fills the encoder's gaps instead (ViT-B/32, 2
    cores, 32 clients: 0.82 -> 0.88 of the raw encoder's images/s). Raising one's own nice value needs no
    privileges.
    """
    if niceness and sys.platform == "linux":
        try:
            thread = threading.get_native_id()
            os.setpriority(
                os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness)
            )
        except OSError as exc:
            log.warning("decode threads keep normal priority: setpriority failed (%s)", exc)


class ImagePipeline:
    def __init__(self, settings: Settings, metrics: Metrics, scorer: Scorer) -> None:
        self.settings, self.metrics, self.scorer = settings, metrics, scorer
        self.limits = DecodeLimits(max_pixels=settings.max_image_pixels, max_bytes=settings.max_body_bytes)
        self.decoder = decoder_for_device(settings.decode_device)
        self.pool = ThreadPoolExecutor(
            settings.decode_threads,
            thread_name_prefix="decode",
            initializer=lower_thread_priority,
            initargs=(settings.decode_niceness,),
        )
        self.backlog = Backlog(settings.max_queue_images, on_depth=metrics.queue_depth.set)
        metrics.queue_capacity.set(settings.max_queue_images)

    def serve(self, runtime: ModelRuntime) -> ServedModel:
        """A loaded version made ready for traffic: embeddings handed to a GPU scorer on the device where
        they can be, and its own batcher on the embedded backend (Triton batches with its own)."""
        model = runtime.bundle.manifest.name
        if self.scorer.device == "gpu" and runtime.encoders.keep_image_embeddings_on(self.scorer.xp):
            log.info("%s: image embeddings stay on the GPU from encoder to scorer (IO binding)", model)
        if runtime.encoders.batches_images:
            return ServedModel(runtime, None)

        async def encode(pixels: np.ndarray) -> Any:
            return await self.metrics.encoder_call(model, "image", runtime.encode_images(pixels))

        batcher = Batcher(
            encode,
            self.settings.max_batch_size,
            self.settings.max_batch_wait_ms / 1000.0,
            on_batch=self.metrics.batch_size.labels(model, "image").observe,
        )
        batcher.start()
        return ServedModel(runtime, batcher)

    def check_room(self) -> None:
        """429 at once, before the request's body is read, when the backlog has no room for an image."""
        self.backlog.check_room()

    async def embed(self, served: ServedModel, images: Sequence[bytes]) -> Any:
        """Embeddings ``(N, D)`` of the request's images, by ``served``'s version."""
        if not images:
            raise ApiError("no_images", "send at least one image")
        if len(images) > self.settings.max_images:
            raise ApiError(
                "too_many_images",
                f"{len(images)} images in one request; the limit is {self.settings.max_images}",
            )
        model = served.manifest.name
        self.metrics.images.labels(model).inc(len(images))
        with self.backlog.hold(len(images)):  # counted before decoding: the bound covers decode memory
            loop = asyncio.get_running_loop()
            decoding = (loop.run_in_executor(self.pool, self._decode, served, data) for data in images)
            pixels = np.stack(await asyncio.gather(*decoding))
            if served.batcher is not None:
                return await served.batcher.submit(pixels)
            self.metrics.batch_size.labels(model, "image").observe(len(pixels))
            return await self.metrics.encoder_call(model, "image", served.runtime.encode_images(pixels))

    def _decode(self, served: ServedModel, data: bytes) -> np.ndarray:
        began = time.perf_counter()
        try:
            if not isinstance(self.decoder, GpuDecoder):
                return self.decoder(data, served.manifest.preprocess, self.limits)
            pixels, fallback = self.decoder.decode(data, served.manifest.preprocess, self.limits)
            if fallback is not None:
                self.metrics.decode_fallbacks.labels(fallback).inc()
            return pixels
        finally:
            self.metrics.preprocess_duration.observe(time.perf_counter() - began)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
