"""Which ONNX Runtime execution providers to ask for, with what options, and whether they really loaded.

ONNX Runtime lists CUDA and TensorRT as *available* whenever onnxruntime-gpu is installed, and when their
libraries cannot load it logs one line and runs the session on the CPU. Here that is never silent: after
a session is created its providers are compared with the request. A provider asked for by name that did
not load is a :class:`ProviderError` naming the library the dynamic loader could not find; under
``auto`` the skipped accelerator and the reason are logged. TensorRT always comes with CUDA after it
(nodes TensorRT does not take run on the GPU, not the CPU), fp16, engine and timing caches in a
persistent folder, and explicit shape profiles from the manifest, so engines are built once per shape
range, not on the request path after every restart or at each new batch size.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from lit_bundle.manifest import EncoderSpec
from lit_bundle.triton import trt_profile_shapes
from service.encoders import BackendConfigError

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
ACCELERATORS = ("cuda", "tensorrt")
# The shared library each accelerator's provider lives in, inside onnxruntime/capi/.
_LIBRARIES = {"cuda": "libonnxruntime_providers_cuda.so", "tensorrt": "libonnxruntime_providers_tensorrt.so"}
_FIX = (
    "install the gpu extra (pip install -e '.[serve,gpu]': onnxruntime-gpu with the NVIDIA CUDA 13 "
    "libraries as wheels) on a machine with an NVIDIA driver, or remove it from LIT_PROVIDERS"
)

Provider = str | tuple[str, dict[str, Any]]


class ProviderError(BackendConfigError):
    pass


def requested_keys(requested: Sequence[str], available: Sequence[str]) -> tuple[list[str], bool]:
    """Provider keys to ask for, and whether they were named (``False``: ``auto``, best effort).

    ``auto`` takes CUDA when the installed ONNX Runtime has it (TensorRT only when asked for: its engine
    builds take minutes on first load). A named provider this ONNX Runtime lacks is an error; TensorRT
    gets CUDA after it."""
    if list(requested) == ["auto"]:
        return (["cuda", "cpu"] if PROVIDERS["cuda"] in available else ["cpu"]), False
    keys: list[str] = []
    for name in requested:
        key = name.strip().lower()
        if key not in PROVIDERS:
            raise ProviderError(
                f"unknown provider {name!r} in LIT_PROVIDERS: use auto or {', '.join(PROVIDERS)}"
            )
        if PROVIDERS[key] not in available:
            raise ProviderError(
                f"provider {key} was requested but ONNX Runtime only has {', '.join(available)}: {_FIX}"
            )
        keys.append(key)
    if "tensorrt" in keys and "cuda" not in keys and PROVIDERS["cuda"] in available:
        keys.insert(keys.index("tensorrt") + 1, "cuda")
    return keys, True


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """ONNX Runtime provider names for ``requested`` (``auto``, or names from ``PROVIDERS``)."""
    return [PROVIDERS[key] for key in requested_keys(requested, available)[0]]


def preload_nvidia_libraries() -> None:
    """Load the CUDA, cuDNN and cuBLAS libraries that the NVIDIA wheels put in site-packages, so no
    system CUDA install is needed (``onnxruntime.preload_dlls``, ONNX Runtime 1.21 and later)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # a missing wheel: the provider check below names what is missing
        log.debug("onnxruntime.preload_dlls: %s", exc)


def load_error(key: str) -> str:
    """Why ``key``'s provider library cannot load here: the dynamic loader's message, which names the
    missing library (e.g. ``libcublasLt.so.13: cannot open shared object file``)."""
    capi = Path(ort.__file__).parent / "capi"
    library = capi / _LIBRARIES[key]
    if not library.is_file():
        return f"this onnxruntime has no {library.name}"
    try:
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(library))
    except OSError as exc:
        return str(exc)
    return "ONNX Runtime could not create it (its log above says why: driver, GPU or library version)"


def tensorrt_options(
    encoder: EncoderSpec, max_batch: int, context_length: int, cache_dir: Path
) -> dict[str, Any]:
    """TensorRT provider options for one encoder: fp16, engine and timing caches under ``cache_dir``, and
    shape profiles covering batches 1..``max_batch`` (and text lengths 1..``context_length``)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
    }
    options.update(trt_profile_shapes(encoder, (1, max_batch, max_batch), context_length))
    return options


def cuda_options(precision: str) -> dict[str, Any]:
    """CUDA provider options: a float32 bundle computes in float32, not TF32 (which ONNX Runtime turns on
    by default on Ampere and later: ~1e-3 off, where the contract is 1e-4 to the CPU); a float16 bundle is
    the fast path."""
    return {"use_tf32": "0"} if precision != "fp16" else {}


def session_providers(
    keys: Sequence[str], tensorrt: dict[str, Any] | None, cuda: dict[str, Any] | None = None
) -> list[Provider]:
    """The ``providers`` argument of ``InferenceSession`` for ``keys``."""
    options = {"tensorrt": tensorrt or {}, "cuda": cuda or {}}
    return [(PROVIDERS[k], options[k]) if options.get(k) else PROVIDERS[k] for k in keys]


def check_loaded(session: ort.InferenceSession, keys: Sequence[str], named: bool, what: str) -> None:
    """Compare the session's providers with ``keys``: a named one that did not load is an error; under
    ``auto`` the skipped accelerator is logged. Run-time fallback to the CPU is turned off either way."""
    session.disable_fallback()
    got = session.get_providers()
    for key in keys:
        if PROVIDERS[key] in got or key == "cpu":
            continue
        why = load_error(key)
        if named:
            raise ProviderError(
                f"provider {key} was requested for the {what} but did not load: {why}. Fix: {_FIX}"
            )
        log.warning("auto: %s skipped for the %s (%s); it runs on %s", key, what, why, ", ".join(got))
