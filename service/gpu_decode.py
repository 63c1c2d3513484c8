"""JPEG decode on the GPU (``LIT_DECODE_DEVICE=gpu``): nvImageCodec decodes, the device resizes and crops.

Why: JPEG decode and resize are most of the gateway's CPU time per image. Only baseline YCbCr or greyscale
JPEGs go to nvImageCodec; every other image (PNG, GIF, WebP, CMYK or progressive JPEG, one nvImageCodec fails
on) falls back, per image, to service/decode.py's CPU path, and the reason is counted. The header checks
(bytes, format, pixel limits) are the CPU path's own and run first, so both paths give the same 4xx answers.
Parity: Pillow's ``Image.resize`` as separable weight matrices (its kernels, antialiasing support, centres,
border clipping, pass order and 8-bit rounding after each pass), built on the host and applied with ``xp``:
CuPy on a GPU, NumPy in the CPU tests, which so run the very code the GPU runs. The EXIF orientation is read
with Pillow as the CPU path reads it and applied on the device as a view. Measured (tests/test_gpu_decode.py):
within a grey level of the CPU path without its draft mode (DCT scaling of big JPEGs, which moves more).
"""

from __future__ import annotations

import io
import logging
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from types import ModuleType
from typing import Any, Literal

import numpy as np
from PIL import ExifTags, Image

from lit_bundle.preprocess import PreprocessSpec
from service.decode import _DAMAGED, DecodeLimits, decode_image, decode_opened, open_checked
from service.encoders import BackendConfigError
from service.resize import Resizer
from service.scoring import gpu_array_module

log = logging.getLogger(__name__)

Decode = Callable[[bytes, PreprocessSpec, DecodeLimits], np.ndarray]
_FIX = (
    "pip install 'nvidia-nvimgcodec-cu13[nvjpeg]' (it comes with the gpu extra) on a machine with an NVIDIA "
    "GPU, or set LIT_DECODE_DEVICE=cpu (or auto)"
)
# EXIF orientation -> the view that makes the picture upright (what ImageOps.exif_transpose does).
_UPRIGHT: dict[Any, Callable[[Any], Any]] = {
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: a.swapaxes(0, 1),  # TRANSPOSE
    6: lambda a: a.swapaxes(0, 1)[:, ::-1],  # ROTATE_270
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # TRANSVERSE
    8: lambda a: a.swapaxes(0, 1)[::-1],  # ROTATE_90
}


class DecodeDeviceError(BackendConfigError):
    """GPU decoding was asked for (``LIT_DECODE_DEVICE=gpu``) and cannot run here."""


def new_nvimgcodec_decoder(nvimgcodec: ModuleType) -> Any:
    """A decoder on the GPU backends only (the hardware decoder left out: its upsampling is its own), with
    libjpeg's fancy (triangular) chroma upsampling, which Pillow uses: nvJPEG's default differs at edges."""
    kinds = (nvimgcodec.BackendKind.GPU_ONLY, nvimgcodec.BackendKind.HYBRID_CPU_GPU)
    return nvimgcodec.Decoder(backends=[nvimgcodec.Backend(k) for k in kinds], options=":fancy_upsampling=1")


def nvimgcodec_decode(nvimgcodec: ModuleType, decoder: Any, data: bytes, xp: ModuleType) -> Any:
    """RGB interleaved uint8 HWC on ``xp``'s device, as stored (orientation is applied by the caller)."""
    params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB)
    image = decoder.decode(nvimgcodec.CodeStream(data), params=params)
    if image is None:  # nvImageCodec answers None (and logs why) rather than raising
        raise ValueError("nvImageCodec could not decode it")
    return np.asarray(image.cpu()) if xp is np else xp.asarray(image)  # __cuda_array_interface__


def _route(image: Image.Image) -> str | None:
    """Why ``image`` stays on the CPU path, or None for a baseline 8-bit YCbCr or greyscale JPEG."""
    if image.format != "JPEG":  # PNG, GIF, WEBP, ... and MPO (a JPEG with more pictures)
        return image.format.lower() if image.format else "unknown"
    if image.mode not in ("RGB", "L"):
        return "cmyk_jpeg"
    if image.info.get("progressive"):
        return "progressive_jpeg"
    if image.mode == "RGB" and not _ycbcr(image):
        return "rgb_jpeg"
    return None


def _ycbcr(image: Image.Image) -> bool:
    """libjpeg's rule for 3 components: JFIF, else Adobe's transform flag, else component ids other than
    R, G, B mean YCbCr. RGB-coded JPEGs stay on the CPU, where libjpeg reads them as RGB."""
    if "jfif" in image.info:
        return True
    if "adobe_transform" in image.info:
        transform: object = image.info["adobe_transform"]
        return transform != 0
    return [layer[0] for layer in getattr(image, "layer", [])] != [82, 71, 66]


def _orientation(image: Image.Image) -> Any:
    """The EXIF orientation as the CPU path reads it: Pillow's ``getexif`` (with its XMP fallback); 1 when
    the EXIF block is malformed, as ``_upright`` then leaves the picture as stored."""
    with suppress(*_DAMAGED):
        return image.getexif().get(ExifTags.Base.Orientation, 1)
    return 1


class GpuDecoder:
    """:func:`service.decode.decode_image`'s contract; baseline JPEGs decode and resize on the device.

    ``nvimgcodec`` and ``xp`` are injected (tests pass a fake and NumPy); each thread gets its own
    nvImageCodec decoder. :meth:`decode` says why the CPU path decoded an image (for the gateway's metrics);
    ``fallbacks`` counts those reasons."""

    def __init__(
        self,
        nvimgcodec: ModuleType,
        xp: ModuleType,
        make_decoder: Callable[[], Any] | None = None,
    ) -> None:
        self.nvimgcodec, self.xp = nvimgcodec, xp
        self.resize = Resizer(xp)
        self.fallbacks: Counter[str] = Counter()
        self.last_error: str | None = None
        self._make_decoder = make_decoder or (lambda: new_nvimgcodec_decoder(nvimgcodec))
        self._lock = threading.Lock()
        self._local = threading.local()

    def __call__(self, data: bytes, spec: PreprocessSpec, limits: DecodeLimits) -> np.ndarray:
        return self.decode(data, spec, limits)[0]

    def decoder(self) -> Any:
        """This thread's nvImageCodec decoder."""
        if (found := getattr(self._local, "decoder", None)) is None:
            found = self._local.decoder = self._make_decoder()
        return found

    def decode(
        self, data: bytes, spec: PreprocessSpec, limits: DecodeLimits
    ) -> tuple[np.ndarray, str | None]:
        """The uint8 ``(size, size, 3)`` array, and None or why the CPU path decoded it."""
        with open_checked(data, spec, limits) as image:
            reason = _route(image)
            if reason is None:
                try:
                    return self._on_device(data, _orientation(image), spec), None
                except Exception as exc:  # nvImageCodec refused it, or the device failed: the CPU decides
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.debug("GPU decode failed, decoding on the CPU: %s", self.last_error)
                    reason = "decoder_error"
            with self._lock:
                self.fallbacks[reason] += 1
            return decode_opened(image, spec, limits), reason

    def _on_device(self, data: bytes, orientation: Any, spec: PreprocessSpec) -> np.ndarray:
        pixels = nvimgcodec_decode(self.nvimgcodec, self.decoder(), data, self.xp)
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"nvImageCodec gave {pixels.dtype} {pixels.shape}, not uint8 HWC RGB")
        out = self.resize(_UPRIGHT.get(orientation, lambda a: a)(pixels), spec)
        return np.ascontiguousarray(out.get() if hasattr(out, "get") else out)


def self_test(decoder: GpuDecoder) -> str | None:
    """Decode a JPEG made here on both paths (which also loads nvJPEG and compiles the device kernels
    before the first request); None when they agree within one grey level, else what went wrong."""
    y, x = np.mgrid[0:72, 0:96]  # a gradient with saturated blocks: a wrong chroma upsampling shows
    pixels = np.stack([x * 2.5, y * 3.0, (x + y) * 1.5], axis=-1).astype(np.uint8)
    pixels[10:40, 20:50], pixels[40:65, 55:90] = (220, 30, 40), (20, 60, 230)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    data, spec, limits = buffer.getvalue(), PreprocessSpec(size=40), DecodeLimits()
    try:
        got, reason = decoder.decode(data, spec, limits)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if reason is not None:
        return f"nvImageCodec did not decode the test JPEG ({decoder.last_error or reason})"
    diff = int(np.abs(got.astype(np.int16) - decode_image(data, spec, limits)).max())
    return None if diff <= 1 else f"the test JPEG differs from the CPU decode by {diff} grey levels"


def _gpu_decoder(nvimgcodec: ModuleType | None, xp: ModuleType | None) -> tuple[GpuDecoder | None, str]:
    if nvimgcodec is None:
        try:
            from nvidia import nvimgcodec as found
        except ImportError:
            return None, "nvImageCodec is not installed"
        except Exception as exc:  # a library it needs fails to load
            return None, f"nvImageCodec does not load ({type(exc).__name__}: {exc})"
        nvimgcodec = found
    if xp is None:
        xp, why = gpu_array_module()
        if xp is None:
            return None, why
    decoder = GpuDecoder(nvimgcodec, xp)
    try:
        decoder.decoder()
    except Exception as exc:  # no driver or no device: "CUDA Runtime failure"
        return None, f"nvImageCodec cannot start a decoder ({type(exc).__name__}: {exc})"
    failure = self_test(decoder)
    return (decoder, "") if failure is None else (None, f"the GPU decode self-test failed: {failure}")


def decoder_for_device(
    device: Literal["auto", "cpu", "gpu"] = "cpu",
    *,
    nvimgcodec: ModuleType | None = None,
    xp: ModuleType | None = None,
) -> Decode:
    """``cpu``: :func:`decode_image`. ``gpu``: a :class:`GpuDecoder`, or a :class:`DecodeDeviceError` when
    nvImageCodec, CuPy or a CUDA device is missing or the self-test fails. ``auto``: the GPU when it passes,
    else the CPU with the reason logged. ``nvimgcodec`` and ``xp`` override the lookups (tests)."""
    why = "LIT_DECODE_DEVICE=cpu"
    if device != "cpu":
        decoder, why = _gpu_decoder(nvimgcodec, xp)
        if decoder is not None:
            log.info("decoding baseline JPEGs on the gpu (nvImageCodec; self-test passed)")
            return decoder
        if device == "gpu":
            raise DecodeDeviceError(f"GPU decoding was asked for (LIT_DECODE_DEVICE=gpu) but {why}: {_FIX}")
    log.info("decoding images on the cpu: %s", why)
    return decode_image
