"""Untrusted image bytes -> the uint8 ``(size, size, 3)`` array the image encoder takes.

Every way a client's bytes can be wrong ends in an :class:`ApiError` with a 4xx status, never a 500:
empty (400), too many bytes or pixels (413), not an image or a format we do not serve (415), damaged or cut
short, even inside the header of a format we serve (400), so elongated that resizing it would blow up (400).
Pixel limits are checked from the header, before anything is decoded. Large JPEGs are decoded at 1/2, 1/4
or 1/8 scale (Pillow's draft mode, i.e. libjpeg's DCT scaling), which is 2-4x faster and changes the
resized result by about a grey level. Runs synchronously: the gateway calls it from a thread pool.
"""

from __future__ import annotations

import base64
import io
import math
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lit_bundle.preprocess import PreprocessSpec, resize_and_crop
from service.errors import ApiError

# MPO is how Pillow reports JPEGs from cameras that embed a second (preview or stereo) picture.
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"})

# What Pillow's parsers raise on damaged or truncated data (``load()`` says "image file is truncated").
_DAMAGED = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, ZeroDivisionError)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
# How the served formats begin: bytes that start like one but that Pillow cannot identify are a damaged or
# truncated file of that format (400), not an unsupported one (415). BMP's "BM" is too short to tell.
_SIGNATURES = {
    "JPEG": (b"\xff\xd8",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "TIFF": (b"II*\x00", b"MM\x00*"),
}
_DRAFT_GAP = 2


@dataclass(frozen=True)
class DecodeLimits:
    """What one image may cost (the defaults are the gateway's documented limits)."""

    max_pixels: int = 40_000_000
    max_bytes: int = 20 * 1024 * 1024
    formats: frozenset[str] = SUPPORTED_FORMATS

    def __post_init__(self) -> None:
        Image.init()  # registers every plugin once; cheap afterwards
        unknown = set(self.formats) - set(Image.OPEN) - {"MPO"}
        if unknown:
            raise ValueError(f"unknown image formats {sorted(unknown)}; use Pillow's names, e.g. 'JPEG'")


def decode_image(data: bytes, spec: PreprocessSpec, limits: DecodeLimits) -> np.ndarray:
    """Decode, orient, convert to RGB and resize/crop like training does; return uint8 HWC."""
    with open_checked(data, spec, limits) as image:
        return decode_opened(image, spec, limits)


@contextmanager
def open_checked(data: bytes, spec: PreprocessSpec, limits: DecodeLimits) -> Iterator[Image.Image]:
    """The image opened lazily (header only) after every check that needs no decoding: bytes, format,
    pixels, resized pixels. Shared with service/gpu_decode.py, which routes on the header."""
    if not data:
        raise ApiError("empty_image", "the image is empty (0 bytes): send the file's contents")
    if len(data) > limits.max_bytes:
        raise ApiError(
            "image_too_large", f"the image is {len(data):,} bytes; the limit is {limits.max_bytes:,}"
        )
    # Pillow's own bomb check (global Image.MAX_IMAGE_PIXELS) is only a safety net behind ours; its warning
    # is made an error here. catch_warnings swaps the process-wide filter list, so concurrent decodes can
    # at worst leave that one filter set to "error" or unset: either way our explicit check still applies.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _client_errors(limits, data):
            image = Image.open(io.BytesIO(data), formats=_parsers(limits))
        with image:
            _check_header(image, spec, limits)
            yield image


def decode_opened(image: Image.Image, spec: PreprocessSpec, limits: DecodeLimits) -> np.ndarray:
    """The CPU decode of an image from :func:`open_checked` (call it inside that block)."""
    _draft(image, spec)
    with _client_errors(limits):
        image.load()
    rgb = _to_rgb(_upright(image))
    # Inside open_checked's block: closing the file image invalidates ``rgb`` when no conversion copied it.
    return np.asarray(resize_and_crop(rgb, spec))


def decode_base64(text: str) -> bytes:
    """Standard or URL-safe base64 (whitespace, missing padding tolerated) or a ``data:...;base64,`` URL."""
    payload = text.strip()
    if payload[:5].lower() == "data:":
        head, comma, payload = payload.partition(",")
        if not comma or not head.lower().endswith(";base64"):
            raise _invalid_base64("a data URL must be base64-encoded, e.g. 'data:image/png;base64,iVBOR...'")
    if payload[:8].lower().startswith(("http://", "https://")):
        raise _invalid_base64("the server never fetches URLs; download the image and send its bytes")
    compact = "".join(payload.split())  # MIME encoders wrap lines at 76 characters
    if ("-" in compact or "_" in compact) and not ("+" in compact or "/" in compact):
        compact = compact.translate(_URLSAFE_TO_STANDARD)
    if "=" not in compact:
        compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise _invalid_base64(str(exc)) from None


def _invalid_base64(detail: str) -> ApiError:
    return ApiError(
        "invalid_base64",
        f"an image is not valid base64 ({detail}); send the file's bytes base64-encoded "
        "(standard alphabet) or as a data URL 'data:image/jpeg;base64,...'",
    )


def _parsers(limits: DecodeLimits) -> list[str]:
    """Pillow has no MPO parser of its own: its JPEG parser reports MPO files."""
    return sorted({"JPEG" if name == "MPO" else name for name in limits.formats})


def _formats_hint(limits: DecodeLimits) -> str:
    return ", ".join(sorted(limits.formats - {"MPO"}))


def _looks_like(data: bytes, limits: DecodeLimits) -> str | None:
    """The served format whose signature ``data`` starts with, if any (WebP: a RIFF container of WEBP)."""
    if "WEBP" in limits.formats and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for fmt, signatures in _SIGNATURES.items():
        if fmt in limits.formats and data.startswith(signatures):
            return fmt
    return None


@contextmanager
def _client_errors(limits: DecodeLimits, data: bytes = b"") -> Iterator[None]:
    """Map what Pillow raises on hostile or broken input to 4xx errors."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ApiError(
            "image_too_many_pixels",
            f"the image has more pixels than the limit of {limits.max_pixels:,} ({exc}); "
            "send a downscaled copy",
        ) from None
    except UnidentifiedImageError:
        if (fmt := _looks_like(data, limits)) is not None:
            raise ApiError(
                "undecodable_image",
                f"the data starts like a {fmt} image but its header is damaged or cut short "
                f"({len(data):,} bytes); re-send the complete file",
            ) from None
        raise ApiError(
            "unsupported_image_format",
            f"the data is not an image in a supported format ({_formats_hint(limits)}) or its header "
            "is damaged; convert it to JPEG or PNG",
        ) from None
    except _DAMAGED as exc:
        raise ApiError(
            "undecodable_image",
            f"the image data is damaged or incomplete ({exc}); re-send the complete file",
        ) from None


def _check_header(image: Image.Image, spec: PreprocessSpec, limits: DecodeLimits) -> None:
    """Refuse before decoding: only the allowed formats' parsers have seen the bytes, and only the header."""
    if image.format not in limits.formats:  # e.g. the JPEG parser answering MPO when MPO is not allowed
        raise ApiError(
            "unsupported_image_format",
            f"{image.format} images are not supported; send one of {_formats_hint(limits)}",
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise ApiError("undecodable_image", f"the image is {width}x{height} pixels: it is empty")
    if width * height > limits.max_pixels:
        raise ApiError(
            "image_too_many_pixels",
            f"the image is {width}x{height} = {width * height:,} pixels; the limit is "
            f"{limits.max_pixels:,}: send a downscaled copy",
        )
    resized = _resized_pixels(width, height, spec)
    if resized > limits.max_pixels:
        # A 40,000,000 x 1 PNG is a few KB and within the pixel limit, but resizing its short side to the
        # model's would make billions of pixels (gigabytes) before the centre crop.
        short = min(width, height)
        most = max(1, limits.max_pixels // _short_side(spec) ** 2)
        raise ApiError(
            "extreme_aspect_ratio",
            f"the image is {width}x{height} pixels: an aspect ratio of {max(width, height) // short:,}:1 "
            f"would resize to {resized:,} pixels (the limit is {limits.max_pixels:,}); crop it to at most "
            f"{most:,}:1",
        )


def _short_side(spec: PreprocessSpec) -> int:
    """The side ``resize_and_crop`` scales the shorter side to before its centre crop."""
    return math.floor(spec.size / spec.crop_fraction)


def _resized_pixels(width: int, height: int, spec: PreprocessSpec) -> int:
    """How many pixels ``resize_and_crop`` resizes the image to before cropping (same rounding)."""
    if spec.resize == "squash":
        return spec.size * spec.size
    short = _short_side(spec)
    return short * int(short * max(width, height) / min(width, height))


def _draft(image: Image.Image, spec: PreprocessSpec) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale, keeping twice the side ``resize_and_crop`` resizes to.

    The factor 2 is Pillow's ``thumbnail(reducing_gap=2.0)`` default: DCT scaling filters worse than the
    bicubic resize that follows, so leaving that resize at least a 2x reduction keeps the result within about
    a grey level of a full decode (1/f-noise test image: mean 1 vs 2.4-3.2 levels with no gap).
    """
    side = spec.size if spec.resize == "squash" else _short_side(spec)
    wanted = _DRAFT_GAP * side
    if min(image.size) >= 2 * wanted:
        # Pillow picks the largest scale keeping both sides >= wanted; a no-op for formats other than JPEG.
        image.draft("RGB", (wanted, wanted))


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block leaves the picture as stored rather than failing."""
    with suppress(*_DAMAGED):
        ImageOps.exif_transpose(image, in_place=True)
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_GREY_MODES:
        return Image.fromarray(_grey_to_uint8(np.asarray(image))).convert("RGB")
    try:
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            return _on_white(image.convert("RGBA"))
        return image.convert("RGB")  # P, L, 1, CMYK, YCbCr, ...
    except ValueError:
        raise ApiError(
            "unsupported_image_format", f"images in colour mode {image.mode} are not supported; send RGB"
        ) from None


def _on_white(rgba: Image.Image) -> Image.Image:
    """Composite onto white: transparent logos, icons and cut-outs are drawn dark-on-light and are shown on
    white pages; dropping alpha would expose whatever colour the encoder left there (often black)."""
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba)
    return canvas


def _grey_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale 16/32-bit or float grey to 8 bits; Pillow's ``convert`` would clip everything above 255 to white.

    Integers within 0..65535 are taken as 16-bit (65535 -> 255); floats within 0..1 as unit range; anything
    else is stretched linearly from its minimum to its maximum.
    """
    if values.dtype.kind in "ui" and values.min() >= 0 and values.max() <= 65535:
        return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8)
    low, high = float(values[finite].min()), float(values[finite].max())
    if low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0
    scaled = (np.where(finite, values, low) - low) * (255.0 / max(high - low, 1e-12))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
