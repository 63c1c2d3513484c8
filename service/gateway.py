"""What the HTTP routes do, without HTTP: decode, batch, encode, cache, score, and label sets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from service.backlog import Backlog, QueueFull
from service.batcher import Batcher
from service.decode import DecodeLimits, decode_image
from service.encoders import BackendConfigError, BackendError, BackendUnavailable
from service.errors import ApiError
from service.label_store import (
    LabelError,
    LabelSet,
    LabelStore,
    LabelStoreUnavailable,
    open_label_store,
    validate_labels,
)
from service.metrics import Metrics
from service.runtime import ModelRuntime
from service.schemas import (
    ClassifyResponse,
    EmbedResponse,
    ImageResult,
    ModelInfo,
    ModelRef,
    Prediction,
)
from service.scoring import Scorer
from service.settings import Settings
from service.text_cache import TextEmbeddingCache

log = logging.getLogger(__name__)

T = TypeVar("T")

LABEL_STATUS = {"empty_labels": 400, "blank_label": 400, "too_many_labels": 413, "label_too_long": 422}


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


def label_error(exc: LabelError) -> ApiError:
    return ApiError(LABEL_STATUS.get(exc.code, 400), exc.code, exc.message)


class Gateway:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.runtime: ModelRuntime | None = None
        self.load_error: str | None = None
        self.cache = TextEmbeddingCache(
            settings.text_cache_bytes,
            on_hit=metrics.cache_hits.inc,
            on_miss=metrics.cache_misses.inc,
            on_size=metrics.cache_entries.set,
        )
        self.store: LabelStore = open_label_store(settings.label_store)
        self.scorer = Scorer.best_available()
        self.decode_limits = DecodeLimits(
            max_pixels=settings.max_image_pixels, max_bytes=settings.max_body_bytes
        )
        self.decode_pool = ThreadPoolExecutor(
            settings.decode_threads,
            thread_name_prefix="decode",
            initializer=lower_thread_priority,
            initargs=(settings.decode_niceness,),
        )
        self.backlog = Backlog(settings.max_queue_images, on_depth=metrics.queue_depth.set)
        metrics.queue_capacity.set(settings.max_queue_images)
        # The embedded backend batches here; Triton batches concurrent requests with its own batcher.
        self.batcher = (
            Batcher(
                self._run_image_encoder,
                settings.max_batch_size,
                settings.max_batch_wait_ms / 1000.0,
                on_batch=metrics.batch_size.labels("image").observe,
            )
            if settings.backend == "onnxruntime"
            else None
        )
        self._warming: asyncio.Task | None = None

    # Life cycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.batcher is not None:
            self.batcher.start()
        try:
            self.runtime = await ModelRuntime.load(self.settings)
        except BackendConfigError:
            raise  # a misconfigured backend is an operator error: refuse to start, never fall back
        except Exception as exc:  # a missing or damaged bundle: the process stays up and /readyz says why
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model not loaded: %s", self.load_error)
            return
        m = self.runtime.bundle.manifest
        self.metrics.model_info.labels(m.name, str(m.version), self.settings.backend).set(1)
        self._warming = asyncio.get_running_loop().create_task(self.warm_label_sets())

    async def warm_label_sets(self) -> None:
        """Encode stored label sets for this model version (once the backend answers), so their first
        use is a cache hit."""
        while (reason := await self.readiness()) is not None:
            log.info("label sets wait for the backend: %s", reason)
            await asyncio.sleep(1.0)
        try:
            label_sets = await asyncio.to_thread(self.store.list)
        except LabelStoreUnavailable as exc:
            log.warning("label sets not warmed: %s", exc)
            return
        for label_set in label_sets:
            try:
                _, templates = await self.resolve_labels(label_set.labels[:1], None, label_set.templates)
                await self.label_matrix(label_set.labels, templates)
            except Exception as exc:  # one bad set must not stop the others
                log.warning("could not encode label set %s: %s", label_set.name, exc)

    async def stop(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        if self.batcher is not None:
            await self.batcher.stop()
        if self.runtime is not None:
            await self.runtime.encoders.close()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    async def readiness(self) -> str | None:
        """None when a model is loaded and its backend can serve it, else why not."""
        if self.runtime is None:
            return self.load_error or "the model is still loading"
        reason = await self.runtime.encoders.readiness()
        self.metrics.backend_up.set(0 if reason else 1)
        return reason

    def model(self) -> ModelRuntime:
        if self.runtime is None:
            raise ApiError(503, "not_ready", f"no model is loaded ({self.load_error or 'still loading'})")
        return self.runtime

    async def info(self) -> ModelInfo:
        runtime = self.model()
        if runtime.encoders.version() is None:
            await self.readiness()  # the Triton backend learns the server's version when it first answers
        m = runtime.bundle.manifest
        return ModelInfo(
            name=m.name, version=m.version, backend=runtime.encoders.name,
            backend_version=runtime.encoders.version(), providers=runtime.encoders.providers(),
            embed_dim=m.embed_dim, image_size=m.preprocess.size, loss=m.loss, templates=list(m.templates),
        )  # fmt: skip

    def ref(self) -> ModelRef:
        m = self.model().bundle.manifest
        return ModelRef(name=m.name, version=m.version)

    # Encoders -------------------------------------------------------------------------------------
    async def _backend_call(self, encoder: str, work: Awaitable[T]) -> T:
        """Await encoder work, timed and counted, with backend failures turned into API errors."""
        began = time.perf_counter()
        try:
            result = await work
        except BackendUnavailable as exc:
            self.metrics.backend_errors.inc()
            self.metrics.backend_up.set(0)
            raise ApiError(503, "backend_unavailable", str(exc)) from None
        except BackendError as exc:
            self.metrics.backend_errors.inc()
            raise ApiError(502, "backend_error", str(exc)) from None
        except Exception:
            self.metrics.backend_errors.inc()
            raise
        finally:
            self.metrics.inference_duration.labels(encoder).observe(time.perf_counter() - began)
        self.metrics.backend_up.set(1)
        return result

    async def _run_image_encoder(self, pixels: np.ndarray) -> np.ndarray:
        return await self._backend_call("image", self.model().encoders.encode_images(pixels))

    def _decode(self, data: bytes) -> np.ndarray:
        began = time.perf_counter()
        try:
            return decode_image(data, self.model().bundle.manifest.preprocess, self.decode_limits)
        finally:
            self.metrics.preprocess_duration.observe(time.perf_counter() - began)

    async def embed_image_bytes(self, images: Sequence[bytes]) -> np.ndarray:
        if not images:
            raise ApiError(400, "no_images", "send at least one image")
        if len(images) > self.settings.max_images:
            raise ApiError(
                413,
                "too_many_images",
                f"{len(images)} images in one request; the limit is {self.settings.max_images}",
            )
        self.model()
        self.metrics.images.inc(len(images))
        try:
            with self.backlog.hold(len(images)):  # counted before decoding: the bound covers decode memory
                return await self._decode_and_encode(images)
        except QueueFull as exc:
            raise ApiError(429, "overloaded", f"the server is busy ({exc}): retry with backoff") from None

    async def _decode_and_encode(self, images: Sequence[bytes]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        decoding = (loop.run_in_executor(self.decode_pool, self._decode, data) for data in images)
        pixels = np.stack(await asyncio.gather(*decoding))
        if self.batcher is not None:
            return await self.batcher.submit(pixels)
        self.metrics.batch_size.labels("image").observe(len(pixels))
        return await self._run_image_encoder(pixels)

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            raise ApiError(400, "no_texts", "send at least one text")
        if len(texts) > self.settings.max_texts:
            raise ApiError(
                413, "too_many_texts", f"{len(texts)} texts; the limit is {self.settings.max_texts}"
            )
        embeddings = await self._backend_call("text", self.model().encode_texts(texts))
        self.metrics.batch_size.labels("text").observe(len(texts))
        return embeddings

    # Classification ------------------------------------------------------------------------------
    async def resolve_labels(
        self, labels: Sequence[str] | None, label_set: str | None, templates: Sequence[str] | None
    ) -> tuple[list[str], tuple[str, ...]]:
        if (labels is None) == (label_set is None):
            raise ApiError(400, "labels_required", "send either labels or label_set (exactly one of them)")
        if label_set is not None:
            stored = await asyncio.to_thread(self.store.get, label_set)
            if stored is None:
                raise ApiError(404, "unknown_label_set", f"no label set named {label_set!r}: PUT it first")
            labels, templates = stored.labels, templates or stored.templates
        else:
            try:
                labels = validate_labels(
                    labels or [], self.settings.max_labels, self.settings.max_label_chars
                )
            except LabelError as exc:
                raise label_error(exc) from None
        chosen = tuple(templates) if templates else self.model().templates
        if any("{}" not in t for t in chosen):
            raise ApiError(422, "invalid_template", "every template needs a {} where the label goes")
        return list(labels), chosen

    async def label_matrix(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """Label embeddings from the cache; only the missing labels go to the text encoder."""
        runtime = self.model()
        templates = tuple(templates)
        hits, missing = self.cache.get_many(runtime.key, templates, labels)
        if missing:
            new = [labels[i] for i in missing]
            fresh = await self._backend_call("text", runtime.encode_labels(new, templates))
            self.cache.put_many(runtime.key, templates, new, fresh)
            hits.update(zip(missing, fresh, strict=True))
        return np.stack([hits[i] for i in range(len(labels))])

    async def classify(
        self,
        images: Sequence[bytes],
        labels: Sequence[str] | None,
        label_set: str | None,
        templates: Sequence[str] | None,
        top_k: int | None,
    ) -> ClassifyResponse:
        labels, chosen = await self.resolve_labels(labels, label_set, templates)
        # A label set's matrix stays on the scoring device; its key changes whenever the set does.
        key = (self.model().key, chosen, hash(tuple(labels))) if label_set is not None else None
        if key is not None and self.scorer.holds(key):
            image_emb, matrix = await self.embed_image_bytes(images), None
        else:
            image_emb, matrix = await asyncio.gather(
                self.embed_image_bytes(images), self.label_matrix(labels, chosen)
            )
        m = self.model().bundle.manifest
        try:
            probs = self.scorer.probabilities(image_emb, matrix, m.logit_scale, m.logit_bias, m.loss, key)
        except KeyError:  # evicted from the device between the check and the use: build it again
            matrix = await self.label_matrix(labels, chosen)
            probs = self.scorer.probabilities(image_emb, matrix, m.logit_scale, m.logit_bias, m.loss, key)
        k = min(top_k or len(labels), len(labels))
        results = []
        for row in probs:
            best = np.argsort(-row, kind="stable")[:k]
            results.append(
                ImageResult(predictions=[Prediction(label=labels[i], score=float(row[i])) for i in best])
            )
        return ClassifyResponse(model=self.ref(), results=results)

    def embed_response(self, embeddings: np.ndarray) -> EmbedResponse:
        return EmbedResponse(model=self.ref(), dim=int(embeddings.shape[1]), embeddings=embeddings.tolist())

    # Label sets -----------------------------------------------------------------------------------
    async def put_label_set(self, name: str, labels: list[str], templates: list[str] | None) -> LabelSet:
        try:
            clean = validate_labels(labels, self.settings.max_labels_per_set, self.settings.max_label_chars)
            label_set = LabelSet(name=name, labels=clean, templates=templates)
        except LabelError as exc:
            raise label_error(exc) from None
        except ValueError as exc:
            raise ApiError(422, "invalid_label_set", str(exc).splitlines()[0]) from None
        _, chosen = await self.resolve_labels(clean[:1], None, templates)
        await self.label_matrix(clean, chosen)  # encode and cache now, so classify is fast at once
        return await asyncio.to_thread(self.store.put, label_set)
