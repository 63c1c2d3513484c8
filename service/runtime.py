"""The active model: bundle, tokenizer, the backend's encoders, and label-embedding computation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from lit_bundle.repository import Bundle, load_bundle
from service.encoders import Encoders, open_encoders
from service.settings import Settings
from service.text_cache import ensemble, expand_prompts

log = logging.getLogger(__name__)

TEXT_CHUNK = 256


def _read_bundle(settings: Settings) -> tuple[Bundle, Tokenizer]:
    bundle = load_bundle(settings.repository, settings.model_name)
    return bundle, bundle.load_tokenizer()


@dataclass
class ModelRuntime:
    bundle: Bundle
    encoders: Encoders
    tokenizer: Tokenizer

    @classmethod
    async def load(cls, settings: Settings) -> ModelRuntime:
        """The repository's active version, served by the backend ``settings`` choose."""
        bundle, tokenizer = await asyncio.to_thread(_read_bundle, settings)
        encoders = await open_encoders(bundle, settings)
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
        return cls(bundle, encoders, tokenizer)

    @property
    def key(self) -> str:
        return f"{self.bundle.manifest.name}:{self.bundle.manifest.version}"

    @property
    def templates(self) -> tuple[str, ...]:
        return self.bundle.manifest.templates

    def _tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

    async def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings of raw texts; tokenisation runs in a worker thread."""
        out = []
        for start in range(0, len(texts), TEXT_CHUNK):
            ids, mask = await asyncio.to_thread(self._tokenize, texts[start : start + TEXT_CHUNK])
            out.append(await self.encoders.encode_texts(ids, mask))
        return np.concatenate(out) if out else np.zeros((0, self.bundle.manifest.embed_dim), np.float32)

    async def encode_labels(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """Prompt-ensembled label embeddings ``(L, D)``."""
        encoded = await self.encode_texts(expand_prompts(labels, templates))
        return ensemble(encoded, len(labels), len(templates))
