"""What the HTTP routes do, without HTTP: one call per route over the rooms that do the work.

- :class:`~service.models.ModelHosts`: which models are served; each one's
  :class:`~service.model_host.ModelHost` loads, swaps and retires its versions;
- :class:`~service.image_pipeline.ImagePipeline`: backlog, decode pool, batcher, image encoder;
- :class:`~service.labels.Labels`: labels or a label set, the text-embedding cache, label-set writes;
- :class:`~service.scoring.Scorer`: probabilities and top-k, on the GPU when there is one.

A classify request goes: route -> :meth:`Gateway.classify` -> the model's pinned version -> labels
(cache, text encoder for what is missing) and, concurrently, the image pipeline (decode, batch, image
encoder) -> scorer -> the answer. Nothing calls back into the facade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from service.device_handoff import to_host
from service.errors import ApiError
from service.image_pipeline import ImagePipeline
from service.label_store import LabelSet
from service.label_stores import open_label_store
from service.labels import Candidates, Labels
from service.metrics import Metrics
from service.model_host import ModelHost
from service.models import ModelHosts
from service.schemas import ClassifyResponse, EmbedResponse, ImageResult, ModelInfo, ModelRef, Prediction
from service.scoring import Scorer
from service.served_model import ServedModel
from service.settings import Settings

T = TypeVar("T")
# A raw text is embedded as the prompt of this template, so it shares the label cache and its LRU bound.
RAW_TEXT = ("{}",)


@dataclass(frozen=True)
class Embeddings:
    """Texts and images embedded by one model version (host float32 ``(N, D)`` arrays, L2-normalised)."""

    model: ModelRef
    texts: np.ndarray
    images: np.ndarray
    text_tokens: int


@dataclass(frozen=True)
class Scores:
    """Every image's probability for every candidate label, in the labels' order: ``(N, L)``."""

    model: ModelRef
    labels: list[str]
    probabilities: np.ndarray


class Gateway:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.scorer = Scorer.for_device(settings.scoring_device)
        self.store = open_label_store(settings.label_store)
        self.labels = Labels(settings, metrics, self.store, self.scorer)
        self.pipeline = ImagePipeline(settings, metrics, self.scorer)
        self.models = ModelHosts(settings, metrics, self._host)

    def _host(self, name: str) -> ModelHost:
        return ModelHost(name, self.settings, self.metrics, self.pipeline, self.labels)

    async def start(self) -> None:
        await self.models.start()

    async def stop(self) -> None:
        await self.models.stop()
        self.pipeline.close()
        self.store.close()

    async def readiness(self) -> tuple[str | None, dict[str, str]]:
        """Why the default model cannot serve (None when it can), and each model's state."""
        if not self.models.hosts:
            return self.models.discovery_error or "no model is loaded yet", {}
        reasons = {name: await host.readiness() for name, host in self.models.hosts.items()}
        states = {name: reason or "ready" for name, reason in reasons.items()}
        return reasons[self.models.default or ""], states

    def check_room(self) -> None:
        self.pipeline.check_room()

    async def model_infos(self) -> list[ModelInfo]:
        return [await host.info() for host in self.models.hosts.values()]

    async def info(self, model: str | None = None) -> ModelInfo:
        return await self.models.host(model).info()

    async def embed_images(self, images: Sequence[bytes], model: str | None = None) -> EmbedResponse:
        if not images:
            raise ApiError("no_images", "send at least one image")
        return _embed_response(await self.embeddings([], images, model), "images")

    async def embed_texts(self, texts: Sequence[str], model: str | None = None) -> EmbedResponse:
        if not texts:
            raise ApiError("no_texts", "send at least one text")
        return _embed_response(await self.embeddings(texts, [], model), "texts")

    async def embeddings(
        self, texts: Sequence[str], images: Sequence[bytes], model: str | None = None
    ) -> Embeddings:
        """Texts (through the text-embedding cache) and images (through the batcher), concurrently and by one
        version of the model, with the texts' token count."""
        if len(texts) > self.settings.max_texts:
            raise ApiError("too_many_texts", f"{len(texts)} texts; the limit is {self.settings.max_texts}")
        async with self.models.serving(model) as served:
            dim = served.manifest.embed_dim
            text_emb, image_emb, tokens = await asyncio.gather(
                self.labels.matrix(served, texts, RAW_TEXT) if texts else _empty(dim),
                self.pipeline.embed(served, images) if images else _empty(dim),
                served.runtime.count_tokens(texts),
            )
            return Embeddings(served.ref(), text_emb, to_host(image_emb), tokens)

    async def classify(
        self,
        images: Sequence[bytes],
        labels: Sequence[str] | None,
        label_set: str | None,
        templates: Sequence[str] | None,
        top_k: int | None,
        model: str | None = None,
    ) -> ClassifyResponse:
        async with self.models.serving(model) as served:
            candidates = await self.labels.resolve(served, labels, label_set, templates)
            names = candidates.labels
            m = served.manifest
            args = (m.logit_scale, m.logit_bias, m.loss, min(top_k or len(names), len(names)), candidates.key)
            best, scores = await self._scored(
                served, images, candidates, lambda emb, matrix: self.scorer.top_k(emb, matrix, *args)
            )
            results = [
                ImageResult(
                    predictions=[
                        Prediction(label=names[i], score=float(p)) for i, p in zip(row, probs, strict=True)
                    ]
                )
                for row, probs in zip(best.tolist(), scores.tolist(), strict=True)
            ]
            return ClassifyResponse(model=served.ref(), results=results)

    async def scores(
        self,
        images: Sequence[bytes],
        labels: Sequence[str] | None,
        label_set: str | None,
        templates: Sequence[str] | None,
        model: str | None = None,
    ) -> Scores:
        """What :meth:`classify` ranks, unranked: every label's probability, in the labels' order."""
        async with self.models.serving(model) as served:
            candidates = await self.labels.resolve(served, labels, label_set, templates)
            m = served.manifest
            args = (m.logit_scale, m.logit_bias, m.loss, candidates.key)
            probabilities = await self._scored(
                served, images, candidates, lambda emb, matrix: self.scorer.probabilities(emb, matrix, *args)
            )
            return Scores(served.ref(), candidates.labels, probabilities)

    async def _scored(
        self,
        served: ServedModel,
        images: Sequence[bytes],
        candidates: Candidates,
        score: Callable[[Any, np.ndarray | None], T],
    ) -> T:
        """``score(image embeddings, label matrix)``, the matrix None when the scorer holds the set's own.

        The images and the missing label embeddings are encoded concurrently."""
        names, chosen, key = candidates.labels, candidates.templates, candidates.key
        matrix: np.ndarray | None = None
        if key is not None and self.scorer.holds(key):  # the set's matrix is already on the device
            image_emb = await self.pipeline.embed(served, images)
        else:
            image_emb, matrix = await asyncio.gather(
                self.pipeline.embed(served, images), self.labels.matrix(served, names, chosen)
            )
        try:
            return score(image_emb, matrix)
        except KeyError:  # evicted from the device between the check and the use: build it again
            return score(image_emb, await self.labels.matrix(served, names, chosen))

    async def put_label_set(
        self, name: str, labels: list[str], templates: list[str] | None, model: str | None = None
    ) -> LabelSet:
        """Store a label set, encoded at once by the named (or default) model so that classify is fast."""
        async with self.models.serving(model) as served:
            return await self.labels.put(name, labels, templates, served)


def _embed_response(embedded: Embeddings, which: str) -> EmbedResponse:
    vectors: np.ndarray = getattr(embedded, which)
    return EmbedResponse(model=embedded.model, dim=int(vectors.shape[1]), embeddings=vectors.tolist())


async def _empty(dim: int) -> np.ndarray:
    return np.zeros((0, dim), np.float32)
