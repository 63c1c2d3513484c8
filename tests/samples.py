"""Sample requests for gateway tests: synthetic-world images, labels, and the scores they must get."""

from __future__ import annotations

import io
import re
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image
from tokenizers import Tokenizer

from lit_bundle.preprocess import resize_and_crop
from lit_bundle.repository import load_bundle
from tests.gateway_server import REPOSITORY
from training.data.synthetic import SyntheticWorld

WORLD = SyntheticWorld(image_size=64, seed=4242)
LABELS = WORLD.class_names[:10]


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


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


def metric(text_or_url: str, name: str) -> float:
    """One sample's value from Prometheus text (or from ``<url>/metrics``); 0 when absent."""
    text = httpx.get(f"{text_or_url}/metrics").text if text_or_url.startswith("http") else text_or_url
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
