"""The embedded backend: the bundle's two ONNX encoders in ONNX Runtime sessions.

Providers come from settings and what is installed. ``auto`` takes CUDA when the installed ONNX Runtime
has it (TensorRT only when asked for: its engine builds take minutes on first load); a provider that was
asked for by name but is missing is an error, never a silent fall-back to the CPU.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort

from lit_bundle.repository import Bundle
from lit_bundle.signature import check_signature
from service.encoders import BackendConfigError

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class ProviderError(BackendConfigError):
    pass


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """ONNX Runtime provider names for ``requested`` (``auto``, or names from ``PROVIDERS``)."""
    if list(requested) == ["auto"]:
        chosen = [PROVIDERS["cuda"]] if PROVIDERS["cuda"] in available else []
        return [*chosen, PROVIDERS["cpu"]]
    chosen = []
    for name in requested:
        key = name.strip().lower()
        if key not in PROVIDERS:
            raise ProviderError(
                f"unknown provider {name!r} in LIT_PROVIDERS: use auto or {', '.join(PROVIDERS)}"
            )
        if PROVIDERS[key] not in available:
            raise ProviderError(
                f"provider {key} was requested but ONNX Runtime only has {', '.join(available)}: install "
                "onnxruntime-gpu (the gpu extra) on a machine with CUDA, or remove it from LIT_PROVIDERS"
            )
        chosen.append(PROVIDERS[key])
    return chosen


class OnnxEncoders:
    """ONNX Runtime sessions, each called from its own worker thread (ONNX Runtime drops the GIL), so the
    image encoder (fed by the gateway's batcher) never waits behind text encoding."""

    name = "onnxruntime"
    batches_images = False

    def __init__(self, bundle: Bundle, requested: Sequence[str] = ("auto",), threads: int = 0) -> None:
        providers = choose_providers(requested, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # Idle intra-op threads must not spin: they would take cores from decoding and the event loop
        # (measured with the ViT-B/32 bundle at 32 clients: 0.86 -> 0.91 of the raw encoder's throughput).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.image = ort.InferenceSession(str(bundle.image_model), options, providers=providers)
        self.text = ort.InferenceSession(str(bundle.text_model), options, providers=providers)
        check_signature(bundle.image_model, bundle.manifest.image_encoder, self.image)
        check_signature(bundle.text_model, bundle.manifest.text_encoder, self.text)
        self.image_input = bundle.manifest.image_encoder.inputs[0].name
        self._image_thread = ThreadPoolExecutor(1, thread_name_prefix="image-encoder")
        self._text_thread = ThreadPoolExecutor(1, thread_name_prefix="text-encoder")
        log.info(
            "ONNX Runtime providers for %s v%s: %s",
            bundle.manifest.name,
            bundle.manifest.version,
            self.providers(),
        )

    async def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        run = self.image.run
        feeds = {self.image_input: pixels}
        return (await asyncio.get_running_loop().run_in_executor(self._image_thread, run, None, feeds))[0]

    async def encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        run = self.text.run
        return (await asyncio.get_running_loop().run_in_executor(self._text_thread, run, None, feeds))[0]

    async def readiness(self) -> str | None:
        return None  # the sessions exist, so they can run

    def providers(self) -> list[str]:
        return self.image.get_providers()

    def version(self) -> str:
        return f"onnxruntime {ort.__version__}"

    async def close(self) -> None:
        self._image_thread.shutdown(wait=False, cancel_futures=True)
        self._text_thread.shutdown(wait=False, cancel_futures=True)
