"""Image embeddings through IO binding: the path a GPU scorer takes, run here with a host output."""

import asyncio
import ctypes
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lit_bundle.repository import load_bundle
from service.device_handoff import DeviceOutput, concatenate, to_host
from service.onnx_backend import OnnxEncoders

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"


@pytest.fixture(scope="module")
def encoders() -> OnnxEncoders:
    return OnnxEncoders(load_bundle(REPOSITORY), ["cpu"], threads=1)


def _pixels(count: int, size: int) -> np.ndarray:
    return np.random.default_rng(count).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_bound_output_equals_a_plain_run(encoders: OnnxEncoders) -> None:
    pixels = _pixels(3, encoders.image.get_inputs()[0].shape[1])
    plain = asyncio.run(encoders.encode_images(pixels))
    bound = DeviceOutput(encoders.image, np, "cpu").run(pixels)
    assert isinstance(bound, np.ndarray) and bound.shape == plain.shape
    assert np.array_equal(bound, plain)


def test_cpu_sessions_refuse_device_arrays_and_bind_host_ones() -> None:
    encoders = OnnxEncoders(load_bundle(REPOSITORY), ["cpu"], threads=1)
    pixels = _pixels(4, encoders.image.get_inputs()[0].shape[1])
    plain = asyncio.run(encoders.encode_images(pixels))
    assert encoders.keep_image_embeddings_on(SimpleNamespace(__name__="cupy")) is False  # type: ignore[arg-type]
    assert encoders.keep_image_embeddings_on(np) is True
    assert encoders._image_output is not None
    assert np.array_equal(asyncio.run(encoders.encode_images(pixels)), plain)


class _PointerArrays:
    """Stands in for CuPy: builds arrays from (pointer, size, owner) the way CuPy's UnownedMemory does, but
    over host memory, so a wrong pointer, size, shape or dtype shows up as wrong values."""

    def __init__(self) -> None:
        self.owners: list[object] = []
        self.cuda = SimpleNamespace(UnownedMemory=self._memory, MemoryPointer=lambda memory, offset: memory)

    def _memory(self, pointer: int, size: int, owner: object, device_id: int) -> tuple[int, int]:
        self.owners.append(owner)
        return pointer, size

    def ndarray(self, shape: tuple[int, ...], dtype: type, memptr: tuple[int, int]) -> np.ndarray:
        pointer, size = memptr
        assert size == int(np.prod(shape)) * np.dtype(dtype).itemsize
        buffer = (ctypes.c_byte * size).from_address(pointer)
        return np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()


def test_wrapping_reads_the_outputs_own_memory(encoders: OnnxEncoders) -> None:
    pixels = _pixels(2, encoders.image.get_inputs()[0].shape[1])
    plain = encoders.image.run(None, {encoders.image.get_inputs()[0].name: pixels})[0]
    xp = _PointerArrays()
    wrapped = DeviceOutput(encoders.image, np, "cpu")
    wrapped.xp = xp  # host memory, read through the device-pointer route
    assert np.array_equal(wrapped.run(pixels), plain)
    assert type(xp.owners[0]).__name__ == "OrtValue"  # the buffer's owner is kept alive with the array


def test_host_helpers_keep_numpy_arrays() -> None:
    a, b = np.ones((2, 3), np.float32), np.zeros((1, 3), np.float32)
    assert concatenate([a]) is a
    assert concatenate([a, b]).shape == (3, 3)
    assert to_host(a) is a
