"""Which ONNX file Triton's ONNX Runtime backend loads for a bundle version, and the check that the version
has it.

Triton loads ``<model>/<version>/<default_model_filename>``: ``model.onnx`` (fp32) unless the config names
a lower-precision variant, ``model.int8.onnx``, which only a version whose manifest carries that gated
variant has. Reading the file name needs no protobuf (:mod:`lit_bundle.pbtxt`), so the gateway can do it
too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from lit_bundle import pbtxt
from lit_bundle.layout import (
    ENCODERS,
    MODEL_FILE,
    Encoder,
    config_path,
    relative_file,
    triton_model,
    variant_file,
)
from lit_bundle.manifest import BundleError, Manifest, VariantPrecision, variant

TritonPrecision = Literal["fp32", "int8"]
"""What Triton's ONNX Runtime backend can be told to load: the fp32 files or the int8 variant."""


def model_filename(precision: str) -> str:
    """The file a config names for ``precision``: ``model.onnx`` for fp32, else the variant's file."""
    return MODEL_FILE if precision == "fp32" else variant_file(precision)


def filename_lines(precision: str) -> list[str]:
    """The ``default_model_filename`` line of a generated config (none for fp32: Triton's default)."""
    return [] if precision == "fp32" else [f'default_model_filename: "{model_filename(precision)}"']


def served_filename(config_text: str) -> str:
    """The file a ``config.pbtxt`` makes Triton load: its ``default_model_filename``, else ``model.onnx``."""
    value = pbtxt.first(pbtxt.parse_text(config_text), "default_model_filename")
    return value if isinstance(value, str) and value else MODEL_FILE


def file_precision(filename: str) -> str | None:
    """``fp32`` for ``model.onnx``, the precision of a variant's file (``model.int8.onnx``: ``int8``), else
    None (a file this project does not make)."""
    if filename == MODEL_FILE:
        return "fp32"
    known: tuple[VariantPrecision, ...] = ("int8", "bf16")
    return next((p for p in known if filename == variant_file(p)), None)


def files_precision(files: dict[str, str]) -> str | None:
    """The precision of the files Triton loads (model -> file) when all have the same, else None."""
    found = {file_precision(file) for file in files.values()}
    return found.pop() if len(found) == 1 else None


def configured_files(repository: Path, name: str) -> dict[str, str]:
    """The file each encoder's ``config.pbtxt`` in ``repository`` makes Triton load, by Triton model name
    (``model.onnx`` where a config is missing or unreadable)."""
    files = {}
    for encoder in ENCODERS:
        try:
            files[triton_model(name, encoder)] = served_filename(
                config_path(repository, name, encoder).read_text()
            )
        except (OSError, ValueError):
            files[triton_model(name, encoder)] = MODEL_FILE
    return files


def check_served_file(config_text: str, manifest: Manifest, encoder: Encoder) -> None:
    """``BundleError`` unless ``manifest``'s version has the file the config makes Triton load for
    ``encoder``: ``model.onnx``, or a variant the manifest carries (published only after its gate)."""
    filename = served_filename(config_text)
    spec = manifest.image_encoder if encoder == "image" else manifest.text_encoder
    found = [v.image_file if encoder == "image" else v.text_file for v in manifest.variants]
    if filename == MODEL_FILE or relative_file(manifest.name, encoder, manifest.version, filename) in found:
        return  # model.onnx is what Triton loads without the field, whatever the manifest calls it
    name, version, precision = manifest.name, manifest.version, file_precision(filename)
    lacks = (
        f"no {precision} variant"
        if precision is not None and variant(manifest, precision) is None
        else f"no file {filename} for {spec.triton_name}"
    )
    raise BundleError(
        f"the config.pbtxt of {spec.triton_name} makes Triton load {filename} (default_model_filename), but "
        f"the manifest of {name} v{version} has {lacks}. Fix: make the variant with `lit-train add-variant "
        f"{name} --precision {precision or 'int8'} --version {version}` and serve the version it publishes, "
        f"or serve model.onnx: `lit-train promote {name} {version} --triton-precision fp32` "
        "(`lit-train retrain` takes --triton-precision fp32 too)"
    )
