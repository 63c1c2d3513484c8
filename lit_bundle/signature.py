"""Check that the ONNX files of a bundle have the tensors its manifest promises.

Uses ONNX Runtime (present wherever a bundle is served or exported), imported when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from lit_bundle.manifest import BundleError, EncoderSpec, TensorSpec

_ORT_TYPES = {
    "tensor(uint8)": "uint8",
    "tensor(float16)": "float16",
    "tensor(float)": "float32",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}


class NodeArg(Protocol):
    """What is read of ONNX Runtime's ``NodeArg`` (an input or output of a session)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def shape(self) -> Sequence[int | str | None]: ...


class Session(Protocol):
    """What is read of an ``onnxruntime.InferenceSession``."""

    def get_inputs(self) -> Sequence[NodeArg]: ...
    def get_outputs(self) -> Sequence[NodeArg]: ...


def _shape(dims: Sequence[int | str | None]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else -1 for d in dims)


def _compare(path: Path, kind: str, expected: tuple[TensorSpec, ...], actual: Sequence[NodeArg]) -> None:
    found = {a.name: a for a in actual}
    for spec in expected:
        tensor = found.get(spec.name)
        if tensor is None:
            raise BundleError(
                f"{path} has no {kind} named {spec.name!r} (it has {sorted(found)}): the manifest and the "
                "ONNX file disagree; re-export the bundle"
            )
        dtype, shape = _ORT_TYPES.get(tensor.type, tensor.type), _shape(tensor.shape)
        if dtype != spec.dtype or shape != spec.shape:
            raise BundleError(
                f"{path}: {kind} {spec.name!r} is {dtype}{list(shape)} but the manifest says "
                f"{spec.dtype}{list(spec.shape)}; re-export the bundle"
            )
    if len(actual) != len(expected):
        raise BundleError(
            f"{path} has {kind}s {sorted(found)}, the manifest lists {[s.name for s in expected]}"
        )


def check_signature(path: Path, encoder: EncoderSpec, session: Session | None = None) -> None:
    """Raise BundleError naming ``path`` when its inputs/outputs differ from ``encoder``'s."""
    if session is None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _compare(path, "input", encoder.inputs, session.get_inputs())
    _compare(path, "output", encoder.outputs, session.get_outputs())
