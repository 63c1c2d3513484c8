"""The model-bundle manifest: what training writes and the gateway and Triton read.

A bundle version lives inside a Triton model repository, so one directory serves both backends:

    <repository>/<name>_image/config.pbtxt
    <repository>/<name>_image/<version>/model.onnx
    <repository>/<name>_image/<version>/manifest.json     <- this manifest
    <repository>/<name>_text/config.pbtxt
    <repository>/<name>_text/<version>/model.onnx
    <repository>/<name>_text/<version>/tokenizer.json

Triton loads ``model.onnx`` and ignores the other files (unless its config names a variant). File paths
in the manifest are relative to the repository root, and every file's sha256 is recorded and checked on load.

The text encoder's token inputs are ``(-1, context_length)`` (every batch padded to the context length,
as ``tokenizer.json`` is saved), or ``(-1, -1)`` when export proved the encoder ignores trailing padding:
then a batch may be padded only to its longest text, at most ``context_length`` tokens
(``Bundle.load_tokenizer`` does that).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lit_bundle.layout import MANIFEST_FILE, manifest_path  # noqa: F401  (part of this module's API)
from lit_bundle.preprocess import PreprocessSpec

SCHEMA_VERSION = 1

TensorType = Literal["uint8", "float16", "float32", "int32", "int64"]


class BundleError(ValueError):
    """A bundle is missing, damaged or inconsistent; the message names the file and the fix."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Frozen):
    """One input or output tensor; ``-1`` marks a dynamic dimension (the batch axis comes first)."""

    name: str
    dtype: TensorType
    shape: tuple[int, ...]


class EncoderSpec(_Frozen):
    """One ONNX encoder, served by Triton as the model ``triton_name``."""

    triton_name: str
    file: str = Field(description="path of the ONNX file, relative to the repository root")
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def output(self) -> TensorSpec:
        return self.outputs[0]


class TextSpec(_Frozen):
    tokenizer: str = Field(description="tokenizer.json path, relative to the repository root")
    context_length: int = Field(gt=0)


class EvaluationData(_Frozen):
    """Which data a bundle's evaluation metrics came from, so a number can be traced and reproduced."""

    kind: Literal["zero_shot", "retrieval", "synthetic"]
    source: str = Field(description="folder, manifest, shard pattern or shard list, as given")
    split: Literal["all", "heldout"] = Field(
        description="'heldout': the part of the training data its hash split kept out of training"
    )
    images: int = Field(ge=0)
    texts: int = Field(ge=0, description="captions (retrieval) or classes (zero-shot)")
    sha256: str = Field(description="sha256 of the list of samples (image paths or keys, labels, captions)")
    metrics: tuple[str, ...] = Field(default=(), description="the keys of Manifest.metrics this data gave")


VariantPrecision = Literal["int8", "bf16"]


class PrecisionGate(_Frozen):
    """How a lower-precision variant compared with the fp32 encoders on held-out labelled images: per-row
    cosine of its embeddings to fp32's, and zero-shot classification with both (variant image and text
    encoders against fp32 image and text encoders)."""

    data: str = Field(description="the held-out labelled images the gate ran on")
    images: int = Field(ge=0)
    classes: int = Field(ge=0)
    prompts: int = Field(ge=0, description="class prompts (classes x templates) compared")
    min_cosine_image: float
    min_cosine_text: float
    top1_agreement: float = Field(description="share of images whose top-1 class is the same as fp32's")
    accuracy_fp32: float
    accuracy: float
    runs_on: str = Field(description="the runtime and device the gate ran on")


class Variant(_Frozen):
    """A lower-precision version of both encoders, published only after it passed its gate. The gateway
    runs it where the CPU supports it (``LIT_PRECISION``); the fp32 ``model.onnx`` files stay the
    reference and the fallback."""

    precision: VariantPrecision
    image_file: str = Field(description="relative to the repository root, like EncoderSpec.file")
    text_file: str
    method: str = Field(description="how it was made (quantiser, calibration data, what stayed fp32)")
    gate: PrecisionGate


class Manifest(_Frozen):
    schema_version: int = SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    version: int = Field(gt=0)
    embed_dim: int = Field(gt=0)
    loss: Literal["softmax", "sigmoid"]
    logit_scale: float = Field(description="multiplier of the cosine similarity (exp of the learned log)")
    logit_bias: float | None = Field(default=None, description="sigmoid-trained models only")
    preprocess: PreprocessSpec
    image_encoder: EncoderSpec
    text_encoder: EncoderSpec
    text: TextSpec
    templates: tuple[str, ...] = ("a photo of a {}.",)
    metrics: dict[str, float] = Field(default_factory=dict)
    evaluation: tuple[EvaluationData, ...] = ()
    provenance: dict[str, str] = Field(default_factory=dict)
    variants: tuple[Variant, ...] = ()
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def referenced_files(manifest: Manifest) -> list[str]:
    variants = [file for v in manifest.variants for file in (v.image_file, v.text_file)]
    return [manifest.image_encoder.file, manifest.text_encoder.file, manifest.text.tokenizer, *variants]


def variant(manifest: Manifest, precision: str) -> Variant | None:
    """The manifest's variant of ``precision``, or None."""
    return next((v for v in manifest.variants if v.precision == precision), None)


def read_manifest(path: Path) -> Manifest:
    """Parse a manifest file, refusing unknown schema versions with a clear error."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(
            f"{path} does not exist: is this a model repository with an exported bundle?"
        ) from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}): re-export the bundle") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{path} has manifest schema_version {version!r}, but this software reads version "
            f"{SCHEMA_VERSION}: upgrade lit-zeroshot, or re-export the bundle with this version"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{path} is not a valid manifest: {exc}") from None


def verify_files(manifest: Manifest, repository: Path) -> None:
    """Check that every referenced file exists and matches its recorded sha256."""
    repository = Path(repository)
    missing_hash = [rel for rel in referenced_files(manifest) if rel not in manifest.files]
    if missing_hash:
        raise BundleError(f"manifest of {manifest.name} v{manifest.version} has no sha256 for {missing_hash}")
    for rel, expected in manifest.files.items():
        path = repository / rel
        if not path.is_file():
            raise BundleError(
                f"{path} is missing from bundle {manifest.name} v{manifest.version}: restore it or re-export"
            )
        if sha256_file(path) != expected:
            raise BundleError(
                f"{path} does not match the sha256 in its manifest (the file changed after export): "
                "restore the original or re-export the bundle"
            )
