"""The gateway's image decoding: every input is built here with Pillow (or by hand for a bomb), no files."""

from __future__ import annotations

import base64
import io
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, JpegImagePlugin

from lit_bundle.preprocess import PreprocessSpec, resize_and_crop
from service.decode import DecodeLimits, decode_base64, decode_image
from service.errors import ApiError

SPEC = PreprocessSpec(size=32, crop_fraction=0.875)  # resizes the short side to 36, then crops 32
LIMITS = DecodeLimits()
REPO = Path(__file__).resolve().parents[1]


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour waves plus a little noise: compresses like a photo, unlike pure noise."""
    y, x = np.mgrid[0:height, 0:width]
    waves = np.stack([128 + 100 * np.sin(x / 23.0 + c) * np.cos(y / 17.0 - c) for c in (0, 1, 2)], -1)
    noise = np.random.default_rng(seed).normal(0, 4, waves.shape)
    return Image.fromarray(np.clip(waves + noise, 0, 255).astype(np.uint8))


def reference(image: Image.Image) -> np.ndarray:
    return np.asarray(resize_and_crop(image.convert("RGB"), SPEC))


def pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return reference(image)


def blank_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG, compressed row by row: a few KB, never a full bitmap in memory."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj()
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def decode(data: bytes, limits: DecodeLimits = LIMITS) -> np.ndarray:
    out = decode_image(data, SPEC, limits)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    return out


def refused(data: bytes, limits: DecodeLimits = LIMITS) -> ApiError:
    with pytest.raises(ApiError) as caught:
        decode_image(data, SPEC, limits)
    return caught.value


# --- round trips ---


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("PNG", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("WEBP", {"lossless": True}),
    ],
)
def test_lossless_formats_match_training_preprocessing_exactly(fmt: str, options: dict) -> None:
    image = photo(50, 40)
    assert np.array_equal(decode(encode(image, fmt, **options)), reference(image))


def test_small_jpeg_matches_pillow_decode() -> None:
    data = encode(photo(50, 40), "JPEG", quality=90)
    assert np.array_equal(decode(data), pillow_decode(data))


def test_large_jpeg_is_decoded_in_draft_mode_and_stays_close(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(photo(640, 480), "JPEG", quality=90)
    drafted: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        result = original(self, mode, size)
        drafted.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    out = decode(data)
    # 1/4 scale keeps the short side (120) above twice the 36 that resize_and_crop resizes to.
    assert drafted == [(160, 120)]
    monkeypatch.undo()
    assert np.abs(out.astype(np.int16) - pillow_decode(data)).mean() < 3.0


def test_mpo_camera_jpeg_is_accepted() -> None:
    data = encode(photo(50, 40), "MPO", save_all=True, append_images=[photo(50, 40, seed=1)])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert np.array_equal(decode(data), pillow_decode(data))


# --- orientation and colour modes ---


@pytest.mark.parametrize(
    ("orientation", "red_quadrant"),
    [(1, "top_left"), (3, "bottom_right"), (6, "top_right"), (8, "bottom_left")],
)
def test_exif_orientation_is_applied(orientation: int, red_quadrant: str) -> None:
    image = Image.new("RGB", (48, 48), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 24, 24))  # red square in the stored image's top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode(encode(image, "JPEG", quality=95, exif=exif.tobytes()))
    quadrants = {
        "top_left": out[:16, :16],
        "top_right": out[:16, 16:],
        "bottom_left": out[16:, :16],
        "bottom_right": out[16:, 16:],
    }
    red = {name: q[..., 1].mean() < 128 for name, q in quadrants.items()}  # red lacks green
    assert red == {name: name == red_quadrant for name in quadrants}


def half_and_half(mode: str, left: object, right: object, size: tuple[int, int] = (40, 40)) -> Image.Image:
    image = Image.new(mode, size, left)  # type: ignore[arg-type]
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))  # type: ignore[arg-type]
    return image


def palette_with_transparency() -> bytes:
    image = half_and_half("P", 0, 1)
    image.putpalette([0, 0, 0, 255, 0, 0])
    return encode(image, "PNG", transparency=0)


def animated_gif() -> bytes:
    first, second = Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (40, 40), (0, 0, 255))
    return encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def sixteen_bit() -> Image.Image:
    pixels = np.full((40, 40), 30_000, np.uint16)
    pixels[:, 20:] = 65_535
    return Image.fromarray(pixels)


# Each case: how to build the bytes, the expected colour of the left and right halves (None: not checked).
MODE_CASES: dict[str, tuple[Callable[[], bytes], tuple | None, tuple | None]] = {
    "palette_transparent_on_white": (palette_with_transparency, (255, 255, 255), (255, 0, 0)),
    "rgba_transparent_on_white": (
        lambda: encode(half_and_half("RGBA", (0, 0, 0, 0), (0, 0, 255, 255)), "PNG"),
        (255, 255, 255),
        (0, 0, 255),
    ),
    "la_transparent_on_white": (
        lambda: encode(half_and_half("LA", (0, 0), (0, 255)), "PNG"),
        (255, 255, 255),
        (0, 0, 0),
    ),
    "cmyk_jpeg": (
        lambda: encode(Image.new("CMYK", (40, 40), (255, 0, 0, 0)), "JPEG", quality=95),
        (0, 255, 255),
        (0, 255, 255),
    ),
    # 16-bit: 30000 -> 117 and 65535 -> 255; clipping would have made both halves 255.
    "grey_16bit_png": (lambda: encode(sixteen_bit(), "PNG"), (117, 117, 117), (255, 255, 255)),
    "grey_16bit_tiff": (lambda: encode(sixteen_bit(), "TIFF"), (117, 117, 117), (255, 255, 255)),
    "float_tiff": (
        lambda: encode(Image.fromarray(np.full((40, 40), 0.5, np.float32)), "TIFF"),
        (128, 128, 128),
        (128, 128, 128),
    ),
    "one_bit_png": (lambda: encode(half_and_half("1", 0, 1), "PNG"), (0, 0, 0), (255, 255, 255)),
    "grey_jpeg": (lambda: encode(Image.new("L", (40, 40), 200), "JPEG"), (200, 200, 200), (200, 200, 200)),
    "animated_gif_first_frame": (animated_gif, (255, 0, 0), (255, 0, 0)),
    "rgba_webp": (
        lambda: encode(half_and_half("RGBA", (0, 0, 0, 0), (0, 255, 0, 255)), "WEBP", lossless=True),
        (255, 255, 255),
        (0, 255, 0),
    ),
    "photo_bmp": (lambda: encode(photo(50, 40), "BMP"), None, None),
}


@pytest.mark.parametrize("case", sorted(MODE_CASES))
def test_every_mode_becomes_rgb(case: str) -> None:
    build, left, right = MODE_CASES[case]
    out = decode(build()).astype(np.int16)
    for expected, half in ((left, out[:, :10]), (right, out[:, -10:])):
        if expected is not None:
            assert np.abs(half - np.array(expected)).max() <= 3, (case, half.reshape(-1, 3).mean(0))


# --- refusals ---


def test_empty_image() -> None:
    error = refused(b"")
    assert (error.status, error.code) == (400, "empty_image")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_a_client_error(fmt: str) -> None:
    data = encode(photo(64, 64), fmt)
    error = refused(data[: len(data) // 2])
    assert (error.status, error.code) == (400, "undecodable_image")
    assert "truncated" in error.message or "damaged" in error.message


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n",
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
        b'<rect width="64" height="64" fill="red"/></svg>\n',
        b"just some text, not an image\n",
        b"P6\n2 2\n255\n" + bytes(12),  # PPM: Pillow reads it, the gateway does not serve it
    ],
    ids=["pdf", "svg", "text", "ppm"],
)
def test_non_images_and_unserved_formats_are_415(data: bytes) -> None:
    error = refused(data)
    assert (error.status, error.code) == (415, "unsupported_image_format")
    assert "JPEG" in error.message and "PNG" in error.message


def test_format_outside_the_configured_set_is_415() -> None:
    error = refused(encode(photo(20, 20), "PNG"), DecodeLimits(formats=frozenset({"JPEG"})))
    assert (error.status, error.code) == (415, "unsupported_image_format")


def test_too_many_bytes() -> None:
    data = encode(photo(40, 40), "PNG")
    error = refused(data, DecodeLimits(max_bytes=len(data) - 1))
    assert (error.status, error.code) == (413, "image_too_large")


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to decode pixel data."""

    def forbidden(self: Image.Image) -> None:
        raise AssertionError("a refused image must not be decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)


@pytest.mark.parametrize("side", [7_000, 20_000])  # over our 40 MP limit; the second also over Pillow's own
def test_decompression_bomb_is_refused_from_the_header(side: int, no_pixel_decoding: None) -> None:
    data = blank_png(side, side)
    assert len(data) < 100_000
    error = refused(data)
    assert (error.status, error.code) == (413, "image_too_many_pixels")
    if side == 7_000:
        assert "7000x7000" in error.message


def test_pixel_limit_is_configurable() -> None:
    error = refused(encode(photo(100, 60), "PNG"), DecodeLimits(max_pixels=5_000))
    assert (error.status, error.code) == (413, "image_too_many_pixels")
    assert "100x60" in error.message


def test_unknown_format_names_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="JPG"):
        DecodeLimits(formats=frozenset({"JPG"}))


# --- base64 ---


def test_base64_variants_are_accepted() -> None:
    data = encode(photo(20, 20), "PNG") + b"\xfb\xff"  # bytes whose encoding needs '+' / '/' or '-' / '_'
    standard = base64.b64encode(data).decode()
    for text in [
        standard,
        f"data:image/png;base64,{standard}",
        f"  DATA:image/png;charset=binary;base64,{standard}\n",
        base64.encodebytes(data).decode(),  # wrapped at 76 characters
        base64.urlsafe_b64encode(data).decode().rstrip("="),
    ]:
        assert decode_base64(text) == data


@pytest.mark.parametrize(
    "text",
    [
        "this is not base64!",
        "data:image/png,iVBORw0KGgo=",  # a data URL that is not base64
        "https://example.com/cat.jpg",
        "aGVsbG8=\u00e9",
        "abcde",  # one character too many for any byte count
        "ab+c-d==",  # two alphabets mixed
    ],
)
def test_bad_base64_is_400(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_base64(text)
    assert (caught.value.status, caught.value.code) == (400, "invalid_base64")


# --- errors and imports ---


def test_api_error_body() -> None:
    error = ApiError("unsupported_image_format", "send a JPEG")
    assert (error.status, error.code, str(error)) == (
        415,
        "unsupported_image_format",
        "415 unsupported_image_format: send a JPEG",
    )
    assert error.body() == {"error": {"code": "unsupported_image_format", "message": "send a JPEG"}}


def test_decoding_imports_no_torch() -> None:
    code = "import service.decode, sys; assert not {'torch', 'training'} & set(sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
