"""The embedded backend: the bundle's two ONNX encoders in ONNX Runtime sessions.

Providers come from settings and what is installed and are checked once the sessions exist
(:mod:`service.providers`): a provider asked for by name that did not load stops start-up, never a
silent run on the CPU. Which files run, the fp32 ``model.onnx`` or a gated lower-precision variant, is
``LIT_PRECISION`` decided by :mod:`service.precision` for these providers and this CPU.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort

from lit_bundle.manifest import EncoderSpec
from lit_bundle.repository import Bundle
from lit_bundle.signature import check_signature
from service.device_handoff import DeviceOutput
from service.encoders import TEXT_BATCH
from service.precision import choose_precision, cpu_flags, own_precision
from service.providers import (
    ACCELERATORS,
    PROVIDERS,
    check_loaded,
    cuda_options,
    preload_nvidia_libraries,
    requested_keys,
    session_providers,
    tensorrt_options,
)

log = logging.getLogger(__name__)


class OnnxEncoders:
    """ONNX Runtime sessions, each called from its own worker thread (ONNX Runtime drops the GIL), so the
    image encoder (fed by the gateway's batcher) never waits behind text encoding."""

    name = "onnxruntime"
    batches_images = False

    def __init__(
        self,
        bundle: Bundle,
        requested: Sequence[str] = ("auto",),
        threads: int = 0,
        max_batch: int = 32,
        trt_cache_dir: Path = Path(".cache/tensorrt"),
        precision: str = "auto",
    ) -> None:
        keys, named = requested_keys(requested, ort.get_available_providers())
        accelerated = any(key in ACCELERATORS for key in keys)
        m = bundle.manifest
        choice = choose_precision(m, precision, accelerated, cpu_flags())  # PrecisionError: not loaded
        log.info("precision: %s", choice.reason)
        self._precision = choice.precision if choice.precision != "fp32" else own_precision(m)
        if accelerated:
            preload_nvidia_libraries()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # Idle intra-op threads must not spin: they would take cores from decoding and the event loop
        # (measured with the ViT-B/32 bundle at 32 clients: 0.86 -> 0.91 of the raw encoder's throughput).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # ONNX Runtime 1.32's CPU layout optimiser (NCHWc) crashes the process when it opens a float16 text
        # graph of two or more layers; it only re-lays-out convolutions for the CPU, so fp16 goes without it.
        disabled = ["NchwcTransformer"] if not accelerated and self._precision == "fp16" else []
        cuda = cuda_options(self._precision)

        def session(path: Path, encoder: EncoderSpec, batch: int, what: str) -> ort.InferenceSession:
            trt = (
                tensorrt_options(encoder, batch, m.text.context_length, trt_cache_dir)
                if "tensorrt" in keys
                else None
            )
            created = ort.InferenceSession(
                str(path), options, providers=session_providers(keys, trt, cuda), disabled_optimizers=disabled
            )
            check_loaded(created, keys, named, f"{what} encoder of {m.name} v{m.version}")
            return created

        image_file, text_file = bundle.path(choice.image_file), bundle.path(choice.text_file)
        self.image = session(image_file, m.image_encoder, max_batch, "image")
        self.compiles_shapes = any(PROVIDERS[k] in self.image.get_providers() for k in ACCELERATORS)
        self.text = session(text_file, m.text_encoder, TEXT_BATCH, "text")
        # A variant has the fp32 files' inputs and outputs: both are checked against the manifest's specs.
        check_signature(image_file, m.image_encoder, self.image)
        check_signature(text_file, m.text_encoder, self.text)
        self.image_input = m.image_encoder.inputs[0].name
        self._image_output: DeviceOutput | None = None
        self._image_thread = ThreadPoolExecutor(1, thread_name_prefix="image-encoder")
        self._text_thread = ThreadPoolExecutor(1, thread_name_prefix="text-encoder")
        log.info(
            "ONNX Runtime providers for %s v%s: %s",
            bundle.manifest.name,
            bundle.manifest.version,
            self.providers(),
        )

    def keep_image_embeddings_on(self, xp: ModuleType) -> bool:
        """From now on return image embeddings as ``xp`` arrays where the encoder ran (IO binding; CuPy on
        CUDA or TensorRT, NumPy on the CPU), or False when ``xp`` cannot reach that memory."""
        device = "cuda" if self.compiles_shapes else "cpu"
        if (xp is np) != (device == "cpu"):
            return False
        self._image_output = DeviceOutput(self.image, xp, device)
        return True

    def _run_image(self, pixels: np.ndarray) -> Any:
        if self._image_output is not None:
            return self._image_output.run(pixels)
        return self.image.run(None, {self.image_input: pixels})[0]

    async def encode_images(self, pixels: np.ndarray) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._image_thread, self._run_image, pixels)

    async def encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        run = self.text.run
        outputs = await asyncio.get_running_loop().run_in_executor(self._text_thread, run, None, feeds)
        embeddings: np.ndarray = outputs[0]
        return embeddings

    async def readiness(self) -> str | None:
        return None  # the sessions exist, so they can run

    def providers(self) -> list[str]:
        providers: list[str] = self.image.get_providers()
        return providers

    def version(self) -> str:
        return f"onnxruntime {ort.__version__}"

    def precision(self) -> str:
        return self._precision

    async def close(self) -> None:
        self._image_thread.shutdown(wait=False, cancel_futures=True)
        self._text_thread.shutdown(wait=False, cancel_futures=True)
