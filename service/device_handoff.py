"""Image embeddings handed from ONNX Runtime to the GPU scorer without leaving the device.

``session.run`` always copies outputs to host memory, so a GPU scorer would upload them straight back.
With IO binding the image encoder's output stays where the encoder ran (ONNX Runtime allocates it on the
GPU), and CuPy wraps that memory as an array without a copy: the ``OrtValue`` is the owner CuPy keeps
alive, so the buffer lives exactly as long as any view of it. Zero-copy goes through the raw device
pointer (``data_ptr``) rather than DLPack because the ``onnxruntime-gpu`` builds for CUDA 13 (1.28-1.31)
do not export ``OrtValue.__dlpack__``. On the CPU the same binding runs with a host output and NumPy, so
the tests exercise the code the GPU runs except for the final wrap.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class DeviceOutput:
    """Runs one session with its first output bound to ``device`` (``cpu`` or ``cuda``) and returns that
    output as an array of ``xp`` (NumPy for ``cpu``, CuPy for ``cuda``)."""

    def __init__(
        self, session: ort.InferenceSession, xp: ModuleType, device: str, device_id: int = 0
    ) -> None:
        self.session, self.xp = session, xp
        self.device, self.device_id = device, device_id
        self.input = session.get_inputs()[0].name
        self.output = session.get_outputs()[0].name

    def run(self, feed: np.ndarray) -> Any:
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input, feed)
        binding.bind_output(self.output, self.device, self.device_id)
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()  # ONNX Runtime's stream is done before CuPy's reads the buffer
        return self.wrap(binding.get_outputs()[0])

    def wrap(self, value: ort.OrtValue) -> Any:
        if self.xp is np:
            return value.numpy()
        cuda = self.xp.cuda
        memory = cuda.UnownedMemory(value.data_ptr(), value.tensor_size_in_bytes(), value, self.device_id)
        dtype = _DTYPES[value.data_type()]
        return self.xp.ndarray(tuple(value.shape()), dtype=dtype, memptr=cuda.MemoryPointer(memory, 0))


def to_host(array: Any) -> np.ndarray:
    """A NumPy copy of a CuPy array, or the NumPy array itself."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


def concatenate(arrays: list[Any]) -> Any:
    """Concatenate along axis 0 in the arrays' own module (CuPy arrays stay on the device)."""
    if len(arrays) == 1:
        return arrays[0]
    if isinstance(arrays[0], np.ndarray):
        return np.concatenate(arrays)
    import cupy  # only device outputs get here, and only where CuPy made them

    return cupy.concatenate(arrays)
