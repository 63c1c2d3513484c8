"""Where a bundle's pieces live in a Triton model repository: the one place these paths are spelled.

::

    <repository>/<name>_image/config.pbtxt          Triton's config; its version policy names the active one
    <repository>/<name>_image/<version>/model.onnx
    <repository>/<name>_image/<version>/manifest.json   written last: a version is complete once it exists
    <repository>/<name>_text/config.pbtxt
    <repository>/<name>_text/<version>/model.onnx
    <repository>/<name>_text/<version>/tokenizer.json
    <repository>/<name>_{image,text}/<version>/model.int8.onnx   optional lower-precision variants
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Encoder = Literal["image", "text"]
ENCODERS: tuple[Encoder, ...] = ("image", "text")
CONFIG_FILE = "config.pbtxt"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


def variant_file(precision: str) -> str:
    """The file name of an encoder's lower-precision variant beside ``model.onnx``: ``model.int8.onnx``."""
    return f"model.{precision}.onnx"


def triton_model(name: str, encoder: Encoder) -> str:
    """The Triton model serving one encoder of bundle ``name``."""
    return f"{name}_{encoder}"


def bundle_of(model: str) -> str:
    """The bundle a Triton model belongs to: ``lit_demo_image`` -> ``lit_demo``."""
    for encoder in ENCODERS:
        if model.endswith(f"_{encoder}"):
            return model.removesuffix(f"_{encoder}")
    return model


def encoder_root(repository: Path, name: str, encoder: Encoder) -> Path:
    return Path(repository) / triton_model(name, encoder)


def config_path(repository: Path, name: str, encoder: Encoder = "image") -> Path:
    return encoder_root(repository, name, encoder) / CONFIG_FILE


def version_dir(repository: Path, name: str, encoder: Encoder, version: int) -> Path:
    return encoder_root(repository, name, encoder) / str(version)


def manifest_path(repository: Path, name: str, version: int) -> Path:
    return version_dir(repository, name, "image", version) / MANIFEST_FILE


def relative_file(name: str, encoder: Encoder, version: int, file: str) -> str:
    """A file's path relative to the repository, as manifests record it."""
    return f"{triton_model(name, encoder)}/{version}/{file}"
