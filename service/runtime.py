"""The active model: bundle, tokenizer, encoders, and the cached label matrix computation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from lit_bundle.repository import Bundle, load_bundle
from service.onnx_backend import OnnxEncoders
from service.settings import Settings
from service.text_cache import ensemble, expand_prompts

log = logging.getLogger(__name__)

TEXT_CHUNK = 256


@dataclass
class ModelRuntime:
    bundle: Bundle
    encoders: OnnxEncoders
    tokenizer: Tokenizer

    @classmethod
    def load(cls, settings: Settings) -> ModelRuntime:
        bundle = load_bundle(settings.repository, settings.model_name)
        encoders = OnnxEncoders(bundle, settings.providers, settings.intra_op_threads)
        tokenizer = Tokenizer.from_file(str(bundle.tokenizer))
        m = bundle.manifest
        log.info(
            "loaded %s v%s from %s (%s loss, dim %d)",
            m.name,
            m.version,
            bundle.repository,
            m.loss,
            m.embed_dim,
        )
        return cls(bundle, encoders, tokenizer)

    @property
    def key(self) -> str:
        return f"{self.bundle.manifest.name}:{self.bundle.manifest.version}"

    @property
    def templates(self) -> tuple[str, ...]:
        return self.bundle.manifest.templates

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings of raw texts (blocking; call from a worker thread)."""
        out = []
        for start in range(0, len(texts), TEXT_CHUNK):
            encodings = self.tokenizer.encode_batch(list(texts[start : start + TEXT_CHUNK]))
            ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
            out.append(self.encoders.encode_texts(ids, mask))
        return np.concatenate(out) if out else np.zeros((0, self.bundle.manifest.embed_dim), np.float32)

    def encode_labels(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """Prompt-ensembled label embeddings ``(L, D)`` (blocking; call from a worker thread)."""
        encoded = self.encode_texts(expand_prompts(labels, templates))
        return ensemble(encoded, len(labels), len(templates))
