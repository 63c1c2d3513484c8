"""Lower-precision variants of a bundle being exported: made, gated, and published only when they pass.

A variant is tried first with every MatMul and Gemm in int8; when that misses the gate, again with
attention's activation MatMuls kept in fp32 (the layers most sensitive to quantisation). The first
attempt that passes is published; when none does, the bundle is published without it and the manifest's
provenance says by how much it missed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tokenizers import Tokenizer

from lit_bundle.gate import gate_failures, gate_summary
from lit_bundle.layout import MODEL_FILE, relative_file, variant_file
from lit_bundle.manifest import PrecisionGate, Variant, VariantPrecision
from lit_bundle.preprocess import PreprocessSpec
from training.precision_gate import EncoderFiles, GateInputs, GateSet, compare, embed
from training.quantize import METHOD, quantize_int8

CALIBRATION_IMAGE_BATCH = 8
CALIBRATION_TEXT_BATCH = 32


class VariantError(ValueError):
    """A variant cannot be made here (a precision this machine cannot gate, no data to calibrate on)."""


@dataclass(frozen=True)
class VariantRequest:
    """Which variants to make, what to calibrate them on, and the held-out set to gate them on."""

    precisions: tuple[VariantPrecision, ...]
    calibration_images: list[Image.Image]
    calibration_texts: list[str]
    gate: GateSet
    calibration_source: str


@dataclass(frozen=True)
class BuiltVariant:
    """A variant that passed its gate, staged as ``variant_file(precision)`` beside each ``model.onnx``."""

    precision: VariantPrecision
    method: str
    gate: PrecisionGate

    def entry(self, name: str, version: int) -> Variant:
        """The manifest entry of this variant once published as ``name`` v``version``."""
        return Variant(
            precision=self.precision,
            image_file=relative_file(name, "image", version, variant_file(self.precision)),
            text_file=relative_file(name, "text", version, variant_file(self.precision)),
            method=self.method,
            gate=self.gate,
        )


@dataclass(frozen=True)
class VariantOutcome:
    built: list[BuiltVariant]
    rejected: dict[str, str]  # provenance entries: what each attempt that missed its gate missed by
    log: list[str]


def _image_feeds(request: VariantRequest, spec: PreprocessSpec) -> Iterator[dict[str, np.ndarray]]:
    from training.export import image_batch

    images = request.calibration_images
    for start in range(0, len(images), CALIBRATION_IMAGE_BATCH):
        yield {"pixels": image_batch(images[start : start + CALIBRATION_IMAGE_BATCH], spec)}


def _text_feeds(request: VariantRequest, tokenizer: Tokenizer) -> Iterator[dict[str, np.ndarray]]:
    from training.export import token_batch

    texts = request.calibration_texts
    for start in range(0, len(texts), CALIBRATION_TEXT_BATCH):
        yield token_batch(tokenizer, texts[start : start + CALIBRATION_TEXT_BATCH])


def build_variants(
    request: VariantRequest,
    staged_image: Path,
    staged_text: Path,
    preprocess: PreprocessSpec,
    tokenizer: Tokenizer,
) -> VariantOutcome:
    """Make, gate and keep (staged) or delete each requested variant of the staged fp32 encoders."""
    if not request.calibration_images or not request.calibration_texts:
        raise VariantError("int8 calibration needs images and texts: give --calibration-images DIR")
    fp32 = EncoderFiles(staged_image / MODEL_FILE, staged_text / MODEL_FILE)
    inputs = GateInputs.of(request.gate, preprocess)
    reference = embed(fp32, inputs, tokenizer)  # once, for every attempt
    built: list[BuiltVariant] = []
    rejected: dict[str, str] = {}
    log: list[str] = []
    for precision in request.precisions:
        if precision != "int8":
            raise VariantError(f"{precision} variants are not supported yet: use --precision int8")
        files = EncoderFiles(staged_image / variant_file(precision), staged_text / variant_file(precision))
        for keep_attention in (False, True):
            attempt = "attention MatMuls in fp32" if keep_attention else "every MatMul in int8"
            quantize_int8(fp32.image, files.image, _image_feeds(request, preprocess), keep_attention)
            quantize_int8(fp32.text, files.text, _text_feeds(request, tokenizer), keep_attention)
            gate = compare(reference, embed(files, inputs, tokenizer), request.gate)
            failures = gate_failures(gate)
            log.append(f"{precision} ({attempt}): {gate_summary(gate)}: {'; '.join(failures) or 'passed'}")
            if not failures:
                method = METHOD.format(calibration=request.calibration_source, attention=attempt)
                built.append(BuiltVariant(precision, method, gate))
                break
            key = f"variant_{precision}_rejected_{'attention_fp32' if keep_attention else 'full'}"
            rejected[key] = f"{gate_summary(gate)}: missed: {'; '.join(failures)}"
        else:
            files.image.unlink()
            files.text.unlink()
    return VariantOutcome(built, rejected, log)
