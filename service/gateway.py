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

from lit_bundle.repository import CONFIG_FILE, active_version, resolve_bundle
from service.backlog import Backlog, QueueFull
from service.batcher import Batcher
from service.decode import DecodeLimits, decode_image
from service.device_handoff import to_host
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
from service.schemas import ClassifyResponse, EmbedResponse, ImageResult, ModelInfo, Prediction
from service.scoring import Scorer
from service.served_model import ServedModel
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
        self.served: ServedModel | None = None
        self.load_error: str | None = None
        self.cache = TextEmbeddingCache(
            settings.text_cache_bytes,
            on_hit=metrics.cache_hits.inc,
            on_miss=metrics.cache_misses.inc,
            on_size=metrics.cache_entries.set,
        )
        self.store: LabelStore = open_label_store(settings.label_store)
        self.scorer = Scorer.for_device(settings.scoring_device)
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
        self._tasks: set[asyncio.Task] = set()
        self._refused: tuple[int, int] | None = None  # (version, config mtime) that failed to load

    # Life cycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            runtime = await ModelRuntime.load(self.settings)
        except BackendConfigError:
            raise  # a misconfigured backend is an operator error: refuse to start, never fall back
        except Exception as exc:  # a missing or damaged bundle: the process stays up and /readyz says why
            self.load_error = f"{type(exc).__name__}: {exc}"
            self.metrics.model_loads.labels("refused").inc()
            log.error("model not loaded: %s", self.load_error)
            with contextlib.suppress(Exception):
                self._refused = self._promoted()
        else:
            self._switch_to(self._serve(runtime))
            self._spawn(self.warm_label_sets(self.served))
        if self.settings.model_poll_s > 0:
            self._spawn(self._follow_repository())

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _serve(self, runtime: ModelRuntime) -> ServedModel:
        """The embedded backend batches here, per version; Triton batches with its own batcher."""
        if self.scorer.device == "gpu" and runtime.encoders.keep_image_embeddings_on(self.scorer.xp):
            log.info("image embeddings stay on the GPU from encoder to scorer (IO binding)")
        batcher = None
        if self.settings.backend == "onnxruntime":

            async def encode(pixels: np.ndarray) -> np.ndarray:
                return await self._backend_call("image", runtime.encode_images(pixels))

            batcher = Batcher(
                encode,
                self.settings.max_batch_size,
                self.settings.max_batch_wait_ms / 1000.0,
                on_batch=self.metrics.batch_size.labels("image").observe,
            )
            batcher.start()
        return ServedModel(runtime, batcher)

    def _switch_to(self, new: ServedModel) -> ServedModel | None:
        old, self.served, self.load_error = self.served, new, None
        if old is not None:
            self.metrics.model_info.remove(
                old.manifest.name, str(old.manifest.version), self.settings.backend
            )
        self.metrics.model_info.labels(
            new.manifest.name, str(new.manifest.version), self.settings.backend
        ).set(1)
        self.metrics.model_loads.labels("served").inc()
        return old

    async def _follow_repository(self) -> None:
        """Serve each newly promoted version: poll the repository's active version, load the new one
        beside the old, encode the stored label sets with it, switch, then retire the old one once its
        requests have finished. A version that fails to load is refused and the old one keeps serving."""
        while True:
            await asyncio.sleep(self.settings.model_poll_s)
            try:
                wanted = await asyncio.to_thread(self._promoted)
            except Exception as exc:  # e.g. a config.pbtxt being rewritten by hand: look again later
                log.warning("could not read the active model version: %s", exc)
                continue
            current = self.served.manifest.version if self.served is not None else None
            if wanted is None or wanted[0] == current or wanted == self._refused:
                continue
            try:
                await self._swap()
                self._refused = None
            except Exception as exc:
                self._refused = wanted
                self.metrics.model_loads.labels("refused").inc()
                log.error(
                    "refused model version %d: %s; %s",
                    wanted[0],
                    f"{type(exc).__name__}: {exc}",
                    f"still serving version {current}" if current is not None else "no model is served",
                )

    def _promoted(self) -> tuple[int, int] | None:
        """The active version and when its config was written (a rewrite retries a refused version)."""
        name = resolve_bundle(self.settings.repository, self.settings.model_name)
        config = self.settings.repository / f"{name}_image" / CONFIG_FILE
        version = active_version(self.settings.repository, name)
        return None if version is None else (version, config.stat().st_mtime_ns)

    async def _swap(self) -> None:
        runtime = await ModelRuntime.load(self.settings)
        new = self._serve(runtime)
        try:
            deadline = time.monotonic() + self.settings.model_ready_timeout_s
            while (reason := await runtime.encoders.readiness()) is not None:
                if time.monotonic() > deadline:
                    raise BackendUnavailable(
                        f"not ready after {self.settings.model_ready_timeout_s:g} s: {reason}"
                    )
                await asyncio.sleep(0.5)
            await self._encode_label_sets(new)
        except BaseException:
            await new.retire(0)
            raise
        old = self._switch_to(new)
        log.info("now serving %s version %d", new.manifest.name, new.manifest.version)
        if old is not None:
            self._spawn(self._retire(old))

    async def _retire(self, old: ServedModel) -> None:
        # Its requests end by their own timeouts at the latest: a label-set PUT may take the longer one.
        grace = max(self.settings.request_timeout_s, self.settings.label_set_timeout_s)
        if not await old.retire(grace):
            log.warning("version %d closed with requests still running", old.manifest.version)
        self.cache.drop_model(old.key)
        self.scorer.forget(lambda key: key[0] == old.key)

    async def warm_label_sets(self, served: ServedModel) -> None:
        """Encode stored label sets for this model version (once the backend answers), so their first
        use is a cache hit."""
        while (reason := await served.runtime.encoders.readiness()) is not None:
            log.info("label sets wait for the backend: %s", reason)
            await asyncio.sleep(1.0)
        await self._encode_label_sets(served)

    async def _encode_label_sets(self, served: ServedModel) -> None:
        try:
            label_sets = await asyncio.to_thread(self.store.list)
        except LabelStoreUnavailable as exc:
            log.warning("label sets not encoded for version %d: %s", served.manifest.version, exc)
            return
        for label_set in label_sets:
            try:
                templates = _templates(served, label_set.templates)
                await self.label_matrix(served, label_set.labels, templates)
            except Exception as exc:  # one bad set must not stop the others
                log.warning("could not encode label set %s: %s", label_set.name, exc)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.served is not None:
            await self.served.retire(0)
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    async def readiness(self) -> str | None:
        """None when a model is loaded and its backend can serve it, else why not."""
        if self.served is None:
            return self.load_error or "the model is still loading"
        reason = await self.served.runtime.encoders.readiness()
        self.metrics.backend_up.set(0 if reason else 1)
        return reason

    def model(self) -> ServedModel:
        """The version new requests use (pin it with ``pinned()`` for the request's duration)."""
        if self.served is None:
            raise ApiError(503, "not_ready", f"no model is loaded ({self.load_error or 'still loading'})")
        return self.served

    async def info(self) -> ModelInfo:
        served = self.model()
        encoders = served.runtime.encoders
        if encoders.version() is None:
            await self.readiness()  # the Triton backend learns the server's version when it first answers
        m = served.manifest
        return ModelInfo(
            name=m.name, version=m.version, backend=encoders.name,
            backend_version=encoders.version(), providers=encoders.providers(),
            embed_dim=m.embed_dim, image_size=m.preprocess.size, loss=m.loss, templates=list(m.templates),
        )  # fmt: skip

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

    def _decode(self, served: ServedModel, data: bytes) -> np.ndarray:
        began = time.perf_counter()
        try:
            return decode_image(data, served.manifest.preprocess, self.decode_limits)
        finally:
            self.metrics.preprocess_duration.observe(time.perf_counter() - began)

    async def _image_embeddings(self, served: ServedModel, images: Sequence[bytes]) -> np.ndarray:
        if not images:
            raise ApiError(400, "no_images", "send at least one image")
        if len(images) > self.settings.max_images:
            raise ApiError(
                413,
                "too_many_images",
                f"{len(images)} images in one request; the limit is {self.settings.max_images}",
            )
        self.metrics.images.inc(len(images))
        try:
            with self.backlog.hold(len(images)):  # counted before decoding: the bound covers decode memory
                return await self._decode_and_encode(served, images)
        except QueueFull as exc:
            raise _overloaded(exc) from None

    def check_room(self) -> None:
        """429 at once, before the request's body is read, when the backlog has no room for an image."""
        try:
            self.backlog.check_room()
        except QueueFull as exc:
            raise _overloaded(exc) from None

    async def _decode_and_encode(self, served: ServedModel, images: Sequence[bytes]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        decoding = (loop.run_in_executor(self.decode_pool, self._decode, served, data) for data in images)
        pixels = np.stack(await asyncio.gather(*decoding))
        if served.batcher is not None:
            return await served.batcher.submit(pixels)
        self.metrics.batch_size.labels("image").observe(len(pixels))
        return await self._backend_call("image", served.runtime.encode_images(pixels))

    async def embed_images(self, images: Sequence[bytes]) -> EmbedResponse:
        with self.model().pinned() as served:
            return _embed_response(served, await self._image_embeddings(served, images))

    async def embed_texts(self, texts: Sequence[str]) -> EmbedResponse:
        if not texts:
            raise ApiError(400, "no_texts", "send at least one text")
        if len(texts) > self.settings.max_texts:
            raise ApiError(
                413, "too_many_texts", f"{len(texts)} texts; the limit is {self.settings.max_texts}"
            )
        with self.model().pinned() as served:
            embeddings = await self._backend_call("text", served.runtime.encode_texts(texts))
            self.metrics.batch_size.labels("text").observe(len(texts))
            return _embed_response(served, embeddings)

    # Classification ------------------------------------------------------------------------------
    async def resolve_labels(
        self,
        served: ServedModel,
        labels: Sequence[str] | None,
        label_set: str | None,
        templates: Sequence[str] | None,
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
        return list(labels), _templates(served, templates)

    async def label_matrix(
        self, served: ServedModel, labels: Sequence[str], templates: Sequence[str]
    ) -> np.ndarray:
        """Label embeddings from the cache; only the missing labels go to the text encoder."""
        runtime = served.runtime
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
        with self.model().pinned() as served:
            labels, chosen = await self.resolve_labels(served, labels, label_set, templates)
            # A label set's matrix stays on the scoring device; its key changes whenever the set does.
            key = (served.key, chosen, hash(tuple(labels))) if label_set is not None else None
            if key is not None and self.scorer.holds(key):
                image_emb, matrix = await self._image_embeddings(served, images), None
            else:
                image_emb, matrix = await asyncio.gather(
                    self._image_embeddings(served, images), self.label_matrix(served, labels, chosen)
                )
            m = served.manifest
            k = min(top_k or len(labels), len(labels))
            args = (m.logit_scale, m.logit_bias, m.loss, k, key)
            try:
                best, scores = self.scorer.top_k(image_emb, matrix, *args)
            except KeyError:  # evicted from the device between the check and the use: build it again
                matrix = await self.label_matrix(served, labels, chosen)
                best, scores = self.scorer.top_k(image_emb, matrix, *args)
            results = [
                ImageResult(
                    predictions=[
                        Prediction(label=labels[i], score=float(p)) for i, p in zip(row, probs, strict=True)
                    ]
                )
                for row, probs in zip(best.tolist(), scores.tolist(), strict=True)
            ]
            return ClassifyResponse(model=served.ref(), results=results)

    # Label sets -----------------------------------------------------------------------------------
    async def put_label_set(self, name: str, labels: list[str], templates: list[str] | None) -> LabelSet:
        try:
            clean = validate_labels(labels, self.settings.max_labels_per_set, self.settings.max_label_chars)
            label_set = LabelSet(name=name, labels=clean, templates=templates)
        except LabelError as exc:
            raise label_error(exc) from None
        except ValueError as exc:
            raise ApiError(422, "invalid_label_set", str(exc).splitlines()[0]) from None
        with self.model().pinned() as served:  # encode and cache now, so classify is fast at once
            await self.label_matrix(served, clean, _templates(served, templates))
        return await asyncio.to_thread(self.store.put, label_set)


def _overloaded(exc: QueueFull) -> ApiError:
    return ApiError(429, "overloaded", f"the server is busy ({exc}): retry with backoff")


def _templates(served: ServedModel, templates: Sequence[str] | None) -> tuple[str, ...]:
    chosen = tuple(templates) if templates else served.runtime.templates
    if any("{}" not in t for t in chosen):
        raise ApiError(422, "invalid_template", "every template needs a {} where the label goes")
    return chosen


def _embed_response(served: ServedModel, embeddings: np.ndarray) -> EmbedResponse:
    return EmbedResponse(
        model=served.ref(), dim=int(embeddings.shape[1]), embeddings=to_host(embeddings).tolist()
    )
