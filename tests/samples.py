"""Sample requests for gateway tests: held-out synthetic images, and the scores they must get.

The synthetic world, its labels and the image encoding are :mod:`harness.images` (the benchmarks use
them too); what is here only the tests need.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from tokenizers import Tokenizer

from harness.gateway import REPOSITORY
from harness.images import WORLD, encode
from lit_bundle.preprocess import resize_and_crop
from lit_bundle.repository import load_bundle


def images(count: int, offset: int = 0) -> list[bytes]:
    """``count`` distinct held-out synthetic images as PNG files."""
    return [encode(WORLD.sample("eval", offset + 7 * i)[0]) for i in range(count)]


class Reference:
    """Scores computed directly from the bundle's ONNX files and manifest, without the gateway."""

    def __init__(self, repository: Path = REPOSITORY, version: int | None = None) -> None:
        bundle = load_bundle(repository, version=version)
        self.manifest = bundle.manifest
        self.image = ort.InferenceSession(str(bundle.image_model), providers=["CPUExecutionProvider"])
        self.text = ort.InferenceSession(str(bundle.text_model), providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(bundle.tokenizer))

    def scores(self, blobs: list[bytes], labels: list[str], templates: list[str] | None) -> np.ndarray:
        spec = self.manifest.preprocess
        pixels = np.stack(
            [np.asarray(resize_and_crop(Image.open(io.BytesIO(b)).convert("RGB"), spec)) for b in blobs]
        )
        img = self.image.run(None, {"pixels": pixels})[0]
        rows = []
        for label in labels:
            texts = [t.replace("{}", label) for t in (templates or self.manifest.templates)]
            enc = self.tokenizer.encode_batch(texts)
            feed = {
                "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            }
            mean = self.text.run(None, feed)[0].mean(axis=0)
            rows.append(mean / np.linalg.norm(mean))
        logits = self.manifest.logit_scale * img @ np.stack(rows).T
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        return weights / weights.sum(axis=1, keepdims=True)


def as_matrix(response: dict, labels: list[str]) -> np.ndarray:
    """A classify response as a score matrix ``(images, labels)`` in ``labels`` order."""
    return np.array(
        [
            [{p["label"]: p["score"] for p in r["predictions"]}[label] for label in labels]
            for r in response["results"]
        ]
    )
