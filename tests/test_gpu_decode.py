"""The GPU decode path (service/gpu_decode.py) run on the CPU: the same array code with xp = NumPy, and a fake
nvImageCodec that decodes with Pillow (no draft mode). What is measured here is therefore the resize, crop,
orientation and routing against the CPU path; nvJPEG's own IDCT is checked on a GPU by the start-up self-test.
"""

from __future__ import annotations

import io
import logging
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageOps

import service.decode as cpu_decode
import service.gpu_decode as gpu_decode
import service.resize as device_resize
from lit_bundle.preprocess import PreprocessSpec, resize_and_crop
from service.decode import DecodeLimits, decode_image
from service.encoders import BackendConfigError
from service.errors import ApiError
from service.gpu_decode import DecodeDeviceError, GpuDecoder, decoder_for_device
from service.resize import Resizer

INTERPOLATIONS = ["nearest", "bilinear", "bicubic", "lanczos"]
LIMITS = DecodeLimits()


def _photos() -> dict[str, np.ndarray]:
    """Real photos from scikit-image when it is installed, else a smooth synthetic picture."""
    try:
        from skimage import data
    except ImportError:
        y, x = np.mgrid[0:400, 0:600]
        synthetic = np.stack([x * 0.4, y * 0.6, 128 + 100 * np.sin(x / 17.0) * np.cos(y / 23.0)], axis=-1)
        return {"synthetic 600x400": synthetic.astype(np.uint8)}
    return {
        "coffee 600x400": data.coffee(),
        "astronaut 512x512": data.astronaut(),
        "chelsea 451x300": data.chelsea(),
        "hubble 1000x872": data.hubble_deep_field(),
    }


def _sources() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    photos = _photos()
    photo = next(iter(photos.values()))
    sources = dict(photos)
    sources["photo 1600x1200"] = np.asarray(
        Image.fromarray(photo).resize((1600, 1200), Image.Resampling.BICUBIC)
    )
    sources["photo 100x75 (upscaled)"] = np.asarray(Image.fromarray(photo).resize((100, 75)))
    sources["photo 224x300 (one axis kept)"] = np.asarray(Image.fromarray(photo).resize((224, 300)))
    # Noise and a checkerboard are the worst cases for rounding, overshoot and the order of the two passes.
    sources["noise 333x517"] = rng.integers(0, 256, (517, 333, 3), dtype=np.uint8)
    sources["checkerboard 131x97"] = np.repeat((np.indices((97, 131)).sum(0) % 2 * 255)[..., None], 3, 2)
    sources["checkerboard 131x97"] = sources["checkerboard 131x97"].astype(np.uint8)
    return sources


SOURCES = _sources()


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_the_resize_matrices_reproduce_pillow_within_a_grey_level(interpolation: str) -> None:
    resizer = Resizer(np)
    worst: tuple[int, str] = (0, "")
    for name, pixels in SOURCES.items():
        for resize, fraction in [("shortest", 1.0), ("shortest", 0.875), ("squash", 1.0)]:
            spec = PreprocessSpec(
                size=224, resize=resize, crop_fraction=fraction, interpolation=interpolation
            )
            want = np.asarray(resize_and_crop(Image.fromarray(pixels), spec))
            got = resizer(pixels, spec)
            assert got.shape == want.shape == (224, 224, 3) and got.dtype == np.uint8, name
            diff = int(np.abs(got.astype(np.int16) - want).max())
            worst = max(worst, (diff, f"{name}, {resize}, crop_fraction {fraction}"))
    assert worst[0] <= 1, f"{interpolation}: measured max difference {worst[0]} grey levels ({worst[1]})"


def test_a_resize_without_pillows_pass_order_and_rounding_would_fail() -> None:
    """The noise squash (333x517 -> 224x224) shrinks the height by more than twice the pixels of the width,
    which Pillow 13 resizes vertical pass first: the other order is several grey levels off, so the test
    above can fail."""
    pixels, spec = (
        SOURCES["noise 333x517"],
        PreprocessSpec(size=224, resize="squash", interpolation="lanczos"),
    )
    wx = device_resize.resize_weights(333, 224, "lanczos")
    wy = device_resize.resize_weights(517, 224, "lanczos")
    horizontal_first = np.stack([wy @ np.floor(pixels[..., c] @ wx.T + 0.5) for c in range(3)], axis=-1)
    want = np.asarray(resize_and_crop(Image.fromarray(pixels), spec)).astype(np.float64)
    assert np.abs(np.clip(np.floor(horizontal_first + 0.5), 0, 255) - want).max() > 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_orientation_views_are_pillows_transposes(orientation: int) -> None:
    pixels = SOURCES["noise 333x517"][:40, :60]
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    want = np.asarray(ImageOps.exif_transpose(image))
    got = gpu_decode._UPRIGHT.get(orientation, lambda a: a)(pixels)
    assert np.array_equal(got, want)


# ---- The decoder, with a fake nvImageCodec -----------------------------------------------------------------


class FakeNvimgcodec:
    """nvImageCodec's API as service/gpu_decode.py calls it; decodes with Pillow, without draft mode."""

    BackendKind = SimpleNamespace(GPU_ONLY="gpu", HYBRID_CPU_GPU="hybrid")
    ColorSpec = SimpleNamespace(SRGB="srgb")

    def __init__(self, fail: str | None = None, shift: int = 0) -> None:
        self.fail, self.shift, self.calls = fail, shift, 0

    def Backend(self, kind: str) -> str:  # nvImageCodec's names
        return kind

    def DecodeParams(self, **params: object) -> dict:
        return params

    def CodeStream(self, data: bytes) -> bytes:
        return bytes(data)

    def Decoder(self, backends: list[str], options: str) -> SimpleNamespace:
        assert backends == ["gpu", "hybrid"] and options == ":fancy_upsampling=1"
        if self.fail == "no device":
            raise RuntimeError("CUDA Runtime failure: '#35'")
        return SimpleNamespace(decode=self._decode)

    def _decode(self, stream: bytes, params: dict) -> SimpleNamespace | None:
        self.calls += 1
        assert params == {"apply_exif_orientation": False, "color_spec": "srgb"}
        if self.fail == "raise":
            raise RuntimeError("nvJPEG: bad Huffman table")
        if self.fail == "none":
            return None
        with Image.open(io.BytesIO(stream)) as image:
            pixels = np.asarray(image.convert("RGB")).astype(np.int16) + self.shift
        return SimpleNamespace(cpu=lambda: np.clip(pixels, 0, 255).astype(np.uint8))


def _encode(pixels: np.ndarray, fmt: str = "JPEG", mode: str | None = None, **options: object) -> bytes:
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    (image.convert(mode) if mode else image).save(buffer, fmt, **options)
    return buffer.getvalue()


PHOTO = next(iter(_photos().values()))


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.abs(a.astype(np.int16) - b).max())


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("4:2:0 JPEG", _encode(PHOTO, quality=90)),
        ("4:4:4 JPEG, odd size", _encode(PHOTO[:333, :517], quality=95, subsampling=0)),
        ("greyscale JPEG", _encode(PHOTO, mode="L")),
    ],
)
def test_baseline_jpegs_decode_on_the_device_within_a_grey_level(name, data, interpolation) -> None:
    fake = FakeNvimgcodec()
    decoder = GpuDecoder(fake, np)
    spec = PreprocessSpec(size=224, crop_fraction=0.875, interpolation=interpolation)
    got, reason = decoder.decode(data, spec, LIMITS)
    assert reason is None and fake.calls == 1 and not decoder.fallbacks
    diff = _max_diff(got, decode_image(data, spec, LIMITS))
    assert diff <= 1, f"{name}, {interpolation}: measured max difference {diff} grey levels"


def test_a_big_jpeg_matches_the_cpu_path_without_its_draft_mode(monkeypatch) -> None:
    """The CPU path decodes a 1600x1200 JPEG at 1/2 scale (draft mode, for speed), the GPU at full size.
    Measured against the CPU path as it runs: up to 5-8 grey levels apart (mean ~0.25), which is the draft
    mode's own change, so parity is asserted against the CPU path with draft mode turned off."""
    data = _encode(np.asarray(Image.fromarray(PHOTO).resize((1600, 1200), Image.Resampling.BICUBIC)))
    spec = PreprocessSpec(size=224, interpolation="bicubic")
    got = GpuDecoder(FakeNvimgcodec(), np)(data, spec, LIMITS)
    with_draft = decode_image(data, spec, LIMITS)
    assert np.abs(got.astype(np.int16) - with_draft).mean() < 0.5  # measured 0.23-0.29 on four photos
    monkeypatch.setattr(cpu_decode, "_draft", lambda image, spec: None)
    diff = _max_diff(got, decode_image(data, spec, LIMITS))
    assert diff <= 1, f"measured max difference {diff} grey levels to the CPU path without draft mode"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_encode(PHOTO, "PNG"), "png"),
        (_encode(PHOTO, "GIF"), "gif"),
        (_encode(PHOTO, "WEBP"), "webp"),
        (_encode(PHOTO, mode="CMYK"), "cmyk_jpeg"),
        (_encode(PHOTO, progressive=True), "progressive_jpeg"),
        (_encode(PHOTO, keep_rgb=True), "rgb_jpeg"),  # Adobe transform 0: libjpeg reads it as RGB
    ],
)
def test_other_images_fall_back_to_the_cpu_path(data: bytes, reason: str) -> None:
    fake = FakeNvimgcodec()
    decoder = GpuDecoder(fake, np)
    spec = PreprocessSpec(size=64)
    got, why = decoder.decode(data, spec, LIMITS)
    assert (why, fake.calls, decoder.fallbacks) == (reason, 0, {reason: 1})
    assert np.array_equal(got, decode_image(data, spec, LIMITS))


@pytest.mark.parametrize("fail", ["raise", "none"])
def test_a_decoder_failure_falls_back_to_the_cpu_path(fail: str) -> None:
    fake, data, spec = FakeNvimgcodec(fail=fail), _encode(PHOTO), PreprocessSpec(size=64)
    decoder = GpuDecoder(fake, np)
    got, why = decoder.decode(data, spec, LIMITS)
    assert (why, fake.calls, decoder.fallbacks) == ("decoder_error", 1, {"decoder_error": 1})
    assert np.array_equal(got, decode_image(data, spec, LIMITS))
    assert decoder.last_error and (
        "Huffman" in decoder.last_error or "could not decode" in decoder.last_error
    )


@pytest.mark.parametrize(
    ("data", "limits", "status", "code"),
    [
        (_encode(PHOTO), DecodeLimits(max_pixels=100_000), 413, "image_too_many_pixels"),
        (_encode(PHOTO), DecodeLimits(max_bytes=1_000), 413, "image_too_large"),
        (b"", LIMITS, 400, "empty_image"),
        (_encode(PHOTO, "PNG"), DecodeLimits(formats=frozenset({"JPEG"})), 415, "unsupported_image_format"),
    ],
)
def test_limits_are_checked_before_anything_is_decoded(monkeypatch, data, limits, status, code) -> None:
    fake = FakeNvimgcodec()
    spec = PreprocessSpec(size=64)
    with pytest.raises(ApiError) as cpu:
        decode_image(data, spec, limits)
    monkeypatch.setattr(gpu_decode, "decode_opened", lambda *args: pytest.fail("decoded on the CPU"))
    with pytest.raises(ApiError) as gpu:
        GpuDecoder(fake, np)(data, spec, limits)
    assert (gpu.value.status, gpu.value.code) == (cpu.value.status, cpu.value.code) == (status, code)
    assert str(gpu.value) == str(cpu.value) and fake.calls == 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_exif_rotated_jpeg_comes_out_as_on_the_cpu_path(orientation: int) -> None:
    stored = PHOTO[:, :450]  # 450x400: a turn changes which side is long
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(stored, quality=95, exif=exif.tobytes())
    spec = PreprocessSpec(size=128, resize="squash")  # small enough a change for no draft mode at 450x400
    got, reason = GpuDecoder(FakeNvimgcodec(), np).decode(data, spec, LIMITS)
    want = decode_image(data, spec, LIMITS)
    assert reason is None and _max_diff(got, want) <= 1
    if orientation != 1:  # the picture did turn: as stored it is far from the CPU path's
        as_stored = decode_image(_encode(stored, quality=95), spec, LIMITS)
        assert np.abs(as_stored.astype(np.int16) - want).mean() > 10


def test_the_real_nvimgcodec_api_on_its_cpu_backend() -> None:
    """Where nvImageCodec is installed, its real API (CodeStream, DecodeParams, Image.cpu) through the same
    touch points, on its CPU backend so no GPU is needed: the GPU backends are only a different decoder."""
    nvimgcodec = pytest.importorskip("nvidia.nvimgcodec")
    decoder = GpuDecoder(
        nvimgcodec,
        np,
        make_decoder=lambda: nvimgcodec.Decoder(
            device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
            backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)],
            options=":fancy_upsampling=1",
        ),
    )
    exif = Image.Exif()
    exif[0x0112] = 6
    data, spec = _encode(PHOTO, quality=90, exif=exif.tobytes()), PreprocessSpec(size=224)
    got, reason = decoder.decode(data, spec, LIMITS)
    assert reason is None, decoder.last_error
    assert _max_diff(got, decode_image(data, spec, LIMITS)) <= 1


# ---- decoder_for_device ------------------------------------------------------------------------------------


def test_cpu_is_the_cpu_decoder() -> None:
    assert decoder_for_device("cpu") is decode_image


def test_gpu_without_nvimgcodec_is_a_config_error_naming_the_fix(monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)  # import fails as when not installed
    with pytest.raises(DecodeDeviceError, match="nvImageCodec is not installed") as error:
        decoder_for_device("gpu")
    assert isinstance(error.value, BackendConfigError)
    assert "pip install 'nvidia-nvimgcodec-cu13[nvjpeg]'" in str(error.value)
    assert "LIT_DECODE_DEVICE=cpu" in str(error.value)
    with caplog.at_level(logging.INFO, logger="service.gpu_decode"):
        assert decoder_for_device("auto") is decode_image
    assert "decoding images on the cpu: nvImageCodec is not installed" in caplog.text


def test_gpu_without_cupy_or_a_device_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(DecodeDeviceError, match="CuPy is not installed"):
        decoder_for_device("gpu", nvimgcodec=FakeNvimgcodec())
    with pytest.raises(
        DecodeDeviceError, match=r"cannot start a decoder \(RuntimeError: CUDA Runtime failure"
    ):
        decoder_for_device("gpu", nvimgcodec=FakeNvimgcodec(fail="no device"), xp=np)


def test_gpu_with_a_working_decoder_passes_its_self_test() -> None:
    decoder = decoder_for_device("gpu", nvimgcodec=FakeNvimgcodec(), xp=np)
    assert isinstance(decoder, GpuDecoder)
    data, spec = _encode(PHOTO), PreprocessSpec(size=224)
    assert _max_diff(decoder(data, spec, LIMITS), decode_image(data, spec, LIMITS)) <= 1


@pytest.mark.parametrize(
    ("fake", "failure"),
    [
        (FakeNvimgcodec(shift=5), "the test JPEG differs from the CPU decode by"),
        (FakeNvimgcodec(fail="raise"), "did not decode the test JPEG (RuntimeError: nvJPEG: bad Huffman"),
    ],
)
def test_a_failed_self_test_refuses_gpu_and_falls_back_under_auto(fake, failure, caplog) -> None:
    with pytest.raises(DecodeDeviceError, match="self-test failed") as error:
        decoder_for_device("gpu", nvimgcodec=fake, xp=np)
    assert failure in str(error.value)
    with caplog.at_level(logging.INFO, logger="service.gpu_decode"):
        assert decoder_for_device("auto", nvimgcodec=fake, xp=np) is decode_image
    assert failure in caplog.text
