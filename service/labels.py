"""Candidate labels: resolving a request's labels or label set, the text-embedding cache, label matrices,
and label-set writes.

Label sets are model-independent (labels and templates); each served model version encodes them into its
own matrix, lazily on first use or, for every stored set, when the version starts serving
(``encode_stored``). Matrices live in the cache under the version's key, so a swap never serves an old
version's embeddings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from lit_bundle.prompts import check_templates
from service.errors import ApiError, api_error
from service.label_store import LabelSet, LabelStore, LabelStoreUnavailable, validate_labels
from service.metrics import Metrics
from service.scoring import Scorer
from service.served_model import ServedModel
from service.settings import Settings
from service.text_cache import TextEmbeddingCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidates:
    """What a request is scored against: labels, the templates that make their prompts, and for a stored
    label set the key under which its matrix may stay on the scoring device."""

    labels: list[str]
    templates: tuple[str, ...]
    key: Hashable | None


def templates_for(served: ServedModel, templates: Sequence[str] | None) -> tuple[str, ...]:
    """The request's templates, or the model's own."""
    try:
        return check_templates(templates) if templates else served.runtime.templates
    except ValueError as exc:
        raise api_error(exc) from None


class Labels:
    def __init__(self, settings: Settings, metrics: Metrics, store: LabelStore, scorer: Scorer) -> None:
        self.settings, self.metrics, self.store, self.scorer = settings, metrics, store, scorer
        self.cache = TextEmbeddingCache(settings.text_cache_bytes, on_size=metrics.cache_entries.set)

    async def resolve(
        self,
        served: ServedModel,
        labels: Sequence[str] | None,
        label_set: str | None,
        templates: Sequence[str] | None,
    ) -> Candidates:
        if (labels is None) == (label_set is None):
            raise ApiError("labels_required", "send either labels or label_set (exactly one of them)")
        if label_set is None:
            clean = validate_labels(labels or [], self.settings.max_labels, self.settings.max_label_chars)
            return Candidates(clean, templates_for(served, templates), None)
        stored = await asyncio.to_thread(self.store.get, label_set)
        if stored is None:
            raise ApiError("unknown_label_set", f"no label set named {label_set!r}: PUT it first")
        chosen = templates_for(served, templates or stored.templates)
        # The key changes whenever the set does, so a kept device matrix is never stale.
        return Candidates(stored.labels, chosen, (served.key, chosen, hash(tuple(stored.labels))))

    async def matrix(
        self, served: ServedModel, labels: Sequence[str], templates: Sequence[str]
    ) -> np.ndarray:
        """Label embeddings ``(L, D)`` from the cache; only the missing labels go to the text encoder."""
        runtime, model = served.runtime, served.manifest.name
        templates = tuple(templates)
        hits, missing = self.cache.get_many(runtime.key, templates, labels)
        self.metrics.cache_hits.labels(model).inc(len(labels) - len(missing))
        if missing:
            self.metrics.cache_misses.labels(model).inc(len(missing))
            new = [labels[i] for i in missing]
            fresh = await self.metrics.encoder_call(model, "text", runtime.encode_labels(new, templates))
            self.cache.put_many(runtime.key, templates, new, fresh)
            hits.update(zip(missing, fresh, strict=True))
        return np.stack([hits[i] for i in range(len(labels))])

    async def put(
        self, name: str, labels: list[str], templates: list[str] | None, served: ServedModel
    ) -> LabelSet:
        """Validate, encode with ``served`` (so classify is fast at once), then store atomically."""
        clean = validate_labels(labels, self.settings.max_labels_per_set, self.settings.max_label_chars)
        chosen = templates_for(served, templates)
        try:
            label_set = LabelSet(name=name, labels=clean, templates=templates)
        except ValueError as exc:
            raise ApiError("invalid_label_set", str(exc).splitlines()[0]) from None
        await self.matrix(served, clean, chosen)
        return await asyncio.to_thread(self.store.put, label_set)

    async def encode_stored(self, served: ServedModel) -> None:
        """Encode every stored label set for this version, so that their first use is a cache hit."""
        try:
            label_sets = await asyncio.to_thread(self.store.list)
        except LabelStoreUnavailable as exc:
            log.warning("label sets not encoded for %s: %s", served.key, exc)
            return
        for label_set in label_sets:
            try:
                await self.matrix(served, label_set.labels, templates_for(served, label_set.templates))
            except Exception as exc:  # one bad set must not stop the others
                log.warning("could not encode label set %s for %s: %s", label_set.name, served.key, exc)

    def forget(self, served: ServedModel) -> None:
        """Free what a retired version held: its cached embeddings and its device matrices."""
        self.cache.drop_model(served.key)
        self.scorer.forget(lambda key: key[0] == served.key)
