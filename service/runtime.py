"""The active model: bundle, tokenizer, the backend's encoders, and label-embedding computation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from lit_bundle.prompts import ensemble, expand_prompts
from lit_bundle.repository import Bundle, load_bundle
from service.backends import open_encoders
from service.buckets import batch_buckets, pad_to_bucket
from service.encoders import TEXT_BATCH, Encoders
from service.settings import Settings

log = logging.getLogger(__name__)


def _read_bundle(settings: Settings, name: str) -> tuple[Bundle, Tokenizer]:
    bundle = load_bundle(settings.repository, name)
    return bundle, bundle.load_tokenizer()


@dataclass
class ModelRuntime:
    bundle: Bundle
    encoders: Encoders
    tokenizer: Tokenizer
    max_batch: int = 32

    @classmethod
    async def load(cls, settings: Settings, name: str) -> ModelRuntime:
        """The active version of bundle ``name``, served by the backend ``settings`` choose, warmed up."""
        bundle, tokenizer = await asyncio.to_thread(_read_bundle, settings, name)
        encoders = await open_encoders(bundle, settings)
        runtime = cls(bundle, encoders, tokenizer, settings.max_batch_size)
        if not encoders.batches_images:  # Triton warms its own models (model_warmup in config.pbtxt)
            try:
                await runtime.warm()
            except BaseException:
                await encoders.close()
                raise
        m = bundle.manifest
        log.info(
            "loaded %s v%s from %s (%s loss, dim %d) on the %s backend",
            m.name,
            m.version,
            bundle.repository,
            m.loss,
            m.embed_dim,
            encoders.name,
        )
        return runtime

    @property
    def key(self) -> str:
        return f"{self.bundle.manifest.name}:{self.bundle.manifest.version}"

    @property
    def templates(self) -> tuple[str, ...]:
        return self.bundle.manifest.templates

    @property
    def image_batches(self) -> tuple[int, ...]:
        """The image batch sizes the encoder will see: every bucket where shapes are compiled, else the
        smallest and the largest (first-run allocations)."""
        if self.encoders.compiles_shapes:
            return batch_buckets(self.max_batch)
        return tuple(sorted({1, self.max_batch}))

    @property
    def text_batches(self) -> tuple[int, ...]:
        return batch_buckets(TEXT_BATCH) if self.encoders.compiles_shapes else (1,)

    async def warm(self) -> None:
        """Run each encoder at every batch size it will see, so no request pays for a first run."""
        began = time.perf_counter()
        m = self.bundle.manifest
        size, length = m.preprocess.size, m.text.context_length
        for batch in self.image_batches:
            await self.encoders.encode_images(np.zeros((batch, size, size, 3), dtype=np.uint8))
        for batch in self.text_batches:
            ids = np.zeros((batch, length), dtype=np.int64)
            await self.encoders.encode_texts(ids, np.ones_like(ids))
        log.info(
            "warmed %s v%s in %.1f s: image batches %s, text batches %s (length %d)",
            m.name,
            m.version,
            time.perf_counter() - began,
            list(self.image_batches),
            list(self.text_batches),
            length,
        )

    async def encode_images(self, pixels: np.ndarray) -> Any:
        """Image embeddings (a device array after ``keep_image_embeddings_on``, as the encoders give them);
        on an encoder that compiles shapes, the batch is padded to its bucket."""
        if not self.encoders.compiles_shapes:
            return await self.encoders.encode_images(pixels)
        padded = pad_to_bucket(pixels, batch_buckets(self.max_batch))
        return (await self.encoders.encode_images(padded))[: len(pixels)]

    def _tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

    async def count_tokens(self, texts: Sequence[str]) -> int:
        """How many tokens the text encoder sees for ``texts`` (special tokens counted, padding not, cut at
        the context length as encoding cuts them): what OpenAI-style ``usage`` reports."""
        if not texts:
            return 0
        _, mask = await asyncio.to_thread(self._tokenize, texts)
        return int(mask.sum())

    async def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings of raw texts; tokenisation runs in a worker thread."""
        out = []
        for start in range(0, len(texts), TEXT_BATCH):
            ids, mask = await asyncio.to_thread(self._tokenize, texts[start : start + TEXT_BATCH])
            out.append(await self.encoders.encode_texts(ids, mask))
        return np.concatenate(out) if out else np.zeros((0, self.bundle.manifest.embed_dim), np.float32)

    async def encode_labels(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """Prompt-ensembled label embeddings ``(L, D)``."""
        encoded = await self.encode_texts(expand_prompts(labels, templates))
        return ensemble(encoded, len(labels), len(templates))
