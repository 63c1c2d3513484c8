"""The accuracy gate a lower-precision variant must pass before it is published.

On held-out labelled images, the variant's encoders are compared with the fp32 encoders: every image's
and every class prompt's embedding must keep a cosine of at least ``MIN_COSINE`` to fp32's,
zero-shot classification (prompt ensembling over the bundle's templates, variant against fp32) must pick
the same class for at least ``MIN_TOP1_AGREEMENT`` of the images, and zero-shot accuracy must stay
within ``MAX_ACCURACY_CHANGE`` of fp32's (the thresholds are in :mod:`lit_bundle.gate`, where the
gateway checks a variant's recorded figures against them too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from tokenizers import Tokenizer

from lit_bundle.manifest import PrecisionGate
from lit_bundle.preprocess import PreprocessSpec
from lit_bundle.prompts import ensemble, expand_prompts

IMAGE_CHUNK = 64
TEXT_CHUNK = 256


@dataclass(frozen=True)
class GateSet:
    """Held-out labelled images (never the calibration images) and the class names they are labelled with."""

    images: list[Image.Image]
    labels: list[int]
    class_names: list[str]
    templates: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class EncoderFiles:
    image: Path
    text: Path


@dataclass(frozen=True)
class GateInputs:
    """The gate set as the encoders take it, prepared once for every precision compared on it."""

    data: GateSet
    pixels: np.ndarray
    prompts: list[str]

    @classmethod
    def of(cls, data: GateSet, preprocess: PreprocessSpec) -> GateInputs:
        from training.export import image_batch

        return cls(
            data, image_batch(data.images, preprocess), expand_prompts(data.class_names, data.templates)
        )


@dataclass(frozen=True)
class Embeddings:
    images: np.ndarray
    prompts: np.ndarray


def embed(files: EncoderFiles, inputs: GateInputs, tokenizer: Tokenizer) -> Embeddings:
    """Both encoders of one precision on ONNX Runtime's CPU provider, as the gateway runs them."""
    from training.export import token_batch

    providers, options = ["CPUExecutionProvider"], ort.SessionOptions()
    options.log_severity_level = 3  # quantised graphs make ONNX Runtime warn about unused initializers
    image = ort.InferenceSession(str(files.image), options, providers=providers)
    text = ort.InferenceSession(str(files.text), options, providers=providers)
    pixels, prompts = inputs.pixels, inputs.prompts
    images = [
        image.run(None, {"pixels": pixels[i : i + IMAGE_CHUNK]})[0]
        for i in range(0, len(pixels), IMAGE_CHUNK)
    ]
    texts = [
        text.run(None, token_batch(tokenizer, prompts[i : i + TEXT_CHUNK]))[0]
        for i in range(0, len(prompts), TEXT_CHUNK)
    ]
    return Embeddings(np.concatenate(images), np.concatenate(texts))


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    cosines: np.ndarray = (a * b).sum(axis=1) / norms
    return cosines


def compare(reference: Embeddings, candidate: Embeddings, data: GateSet) -> PrecisionGate:
    """The gate's figures of ``candidate``'s embeddings against fp32's (see :func:`gate_failures`)."""
    classes, templates = len(data.class_names), len(data.templates)
    predicted_ref = (reference.images @ ensemble(reference.prompts, classes, templates).T).argmax(axis=1)
    predicted_var = (candidate.images @ ensemble(candidate.prompts, classes, templates).T).argmax(axis=1)
    labels = np.asarray(data.labels)
    return PrecisionGate(
        data=data.source,
        images=len(labels),
        classes=classes,
        prompts=len(reference.prompts),
        min_cosine_image=float(_row_cosines(reference.images, candidate.images).min()),
        min_cosine_text=float(_row_cosines(reference.prompts, candidate.prompts).min()),
        top1_agreement=float((predicted_ref == predicted_var).mean()),
        accuracy_fp32=float((predicted_ref == labels).mean()),
        accuracy=float((predicted_var == labels).mean()),
        runs_on=f"onnxruntime {ort.__version__} CPUExecutionProvider",
    )


def measure_gate(
    fp32: EncoderFiles,
    variant: EncoderFiles,
    data: GateSet,
    preprocess: PreprocessSpec,
    tokenizer: Tokenizer,
) -> PrecisionGate:
    """Run both precisions on ``data`` and return the gate's figures (see :func:`gate_failures`)."""
    inputs = GateInputs.of(data, preprocess)
    return compare(embed(fp32, inputs, tokenizer), embed(variant, inputs, tokenizer), data)
