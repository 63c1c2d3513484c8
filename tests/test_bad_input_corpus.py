"""The bad-input corpus (tests/bad_input_cases.py; tests/bad_input_openai.py and tests/bad_input_kserve.py for
the OpenAI-compatible and Open Inference Protocol routes) against one real gateway, then proof it is unharmed.

Each case must get its status and error code with the documented error body (docs/http-api.md); the debatable
answers are decided and explained in tests/bad_input_cases.py. Where an image is served, the tests below
show that it was read the right way: EXIF orientation applied, the first frame of an animation, 16-bit
samples scaled. Last, the same gateway must still be healthy and classify exactly like the bundle's own
encoders.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.gateway import running_gateway
from harness.images import LABELS, WORLD, encode
from tests.bad_input_cases import Case, build_corpus, send
from tests.bad_input_images import exif_bytes, frames, png_from_rows
from tests.bad_input_kserve import assert_kserve_error, kserve_cases
from tests.bad_input_openai import openai_cases
from tests.bad_input_requests import b64
from tests.samples import Reference, as_matrix

SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
CORPUS = build_corpus() + openai_cases() + kserve_cases()
assert len({case.name for case in CORPUS}) == len(CORPUS), "case names must be unique"
SLOW_S = 10  # every answer, bombs included, comes well within this


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """One gateway with the default limits, shared by every test in this module."""
    workdir = tmp_path_factory.mktemp("corpus")
    with running_gateway(workdir) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield SimpleNamespace(client=client, url=url, log=next(workdir.glob("gateway-*.log")))


def assert_error_body(response: httpx.Response, code: str | None) -> None:
    """Our error shape, OpenAI's (``type`` and ``param`` too) on its route, or the Open Inference Protocol's
    (a message only; the code is in ``X-Error-Code`` on every error)."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.headers.get("x-request-id"), "every response carries X-Request-ID"
    if code is not None:
        assert response.headers.get("x-error-code") == code, (response.headers, response.text[:300])
    if response.url.path.startswith("/v2/"):
        return assert_kserve_error(response)
    body = response.json()
    fields = {"code", "message"} | ({"type", "param"} if response.url.path == "/v1/embeddings" else set())
    assert set(body) == {"error"} and set(body["error"]) == fields, body
    assert SNAKE_CASE.fullmatch(body["error"]["code"]), body
    assert isinstance(body["error"]["message"], str) and len(body["error"]["message"].strip()) > 10, body
    if code is not None:
        assert body["error"]["code"] == code, body


def assert_success_body(case: Case, response: httpx.Response) -> None:
    if case.path.startswith("/v2/"):
        assert case.check is not None, "a /v2 case that succeeds checks its own answer (JSON or binary)"
        return
    body = response.json()
    if case.path == "/v1/embeddings":
        assert body["model"] == "lit_demo" and body["object"] == "list", body
        embeddings = np.array([d["embedding"] for d in body["data"]])
        assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)
        return
    assert body["model"]["name"] == "lit_demo", body
    if case.path == "/v1/classify":
        for result in body["results"]:
            scores = [p["score"] for p in result["predictions"]]
            assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores), body
    else:
        embeddings = np.array(body["embeddings"])
        assert embeddings.shape[1] == body["dim"]
        assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)


def test_the_corpus_is_big_and_varied() -> None:
    assert len(CORPUS) >= 40
    kinds = {case.sent_as for case in CORPUS}
    assert kinds == {"json", "multipart", "raw"}, kinds
    statuses = {case.status for case in CORPUS}
    assert {200, 400, 404, 405, 413, 415, 422} <= statuses, statuses
    names = " ".join(case.name for case in CORPUS)
    for topic in [
        "truncated", "corrupt", "zero_bytes", "one_byte", "bomb", "animated", "cmyk", "16bit", "exif", "pdf",
        "ct-", "multipart-", "json-", "base64-", "21mb", "labels-empty", "duplicated", "301", "4097",
        "non-string", "unicode", "rtl", "templates-without-slot", "several-slots", "top-k",
    ]:  # fmt: skip
        assert topic in names, topic


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_bad_input(gateway: SimpleNamespace, case: Case) -> None:
    started = time.perf_counter()
    response = send(gateway.client, case)
    elapsed = time.perf_counter() - started
    assert response.status_code == case.status, (case.why, response.text[:500])
    if case.status >= 400:
        assert_error_body(response, case.code)
        if case.status == 405:
            assert response.headers["allow"] == "POST"
    else:
        assert_success_body(case, response)
        if case.check is not None:
            case.check(response)
    assert elapsed < SLOW_S, f"{case.name} took {elapsed:.1f} s"


# --- the served images were read correctly -----------------------------------------------------------


def embed(gateway: SimpleNamespace, *blobs: bytes) -> np.ndarray:
    response = gateway.client.post("/v1/embed/image", json={"images": [b64(b) for b in blobs]})
    assert response.status_code == 200, response.text
    return np.array(response.json()["embeddings"])


def asymmetric() -> Image.Image:
    """96x64 quarters of different colours, a dark corner and a red ramp: the demo model's embedding of it
    changes clearly (cosine <= 0.96) under every rotation and mirroring."""
    pixels = np.full((64, 96, 3), 255, np.uint8)
    pixels[:32] = (200, 30, 30)
    pixels[32:, :48], pixels[32:, 48:] = (30, 30, 200), (30, 200, 30)
    pixels[:, :, 0] = np.maximum(pixels[:, :, 0], np.linspace(0, 255, 96).astype(np.uint8)[None, :])
    pixels[:16, :24] = (0, 0, 0)
    return Image.fromarray(pixels)


# EXIF orientation -> how the stored pixels were turned, from the EXIF 2.32 definition of the tag (the row
# and column the stored image starts with). Displaying it means undoing this.
STORED_AS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # the camera was turned: the picture's top is stored on the left
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_exif_orientation_is_applied(gateway: SimpleNamespace, orientation: int) -> None:
    upright = asymmetric()
    stored = upright.transpose(STORED_AS[orientation])
    tagged = encode(stored, "PNG", exif=exif_bytes(orientation))
    e_upright, e_tagged, e_untagged = embed(gateway, encode(upright, "PNG"), tagged, encode(stored, "PNG"))
    assert np.allclose(e_tagged, e_upright, atol=1e-5), "the orientation tag must be applied"
    assert float(e_untagged @ e_upright) < 0.98, "the stored pixels alone must look different to the model"


def test_exif_orientation_in_a_jpeg(gateway: SimpleNamespace) -> None:
    upright = asymmetric()
    stored = upright.transpose(STORED_AS[6])
    tagged = encode(stored, "JPEG", quality=95, exif=exif_bytes(6))
    e_upright, e_tagged, e_untagged = embed(
        gateway, encode(upright, "JPEG", quality=95), tagged, encode(stored, "JPEG", quality=95)
    )
    assert float(e_tagged @ e_upright) > 0.995
    assert float(e_untagged @ e_upright) < float(e_tagged @ e_upright) - 0.02


@pytest.mark.parametrize(("fmt", "options"), [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})])
def test_an_animation_is_its_first_frame(gateway: SimpleNamespace, fmt: str, options: dict) -> None:
    first, second, third = frames((220, 30, 30), (30, 30, 220), (30, 200, 30))
    first.paste((250, 250, 250), (0, 0, 16, 16))  # not a flat colour, still exact in a GIF palette
    animation = encode(first, fmt, save_all=True, append_images=[second, third], duration=100, **options)
    assert Image.open(io.BytesIO(animation)).n_frames == 3
    e_animation, e_first, e_second = embed(gateway, animation, encode(first, "PNG"), encode(second, "PNG"))
    assert np.allclose(e_animation, e_first, atol=1e-5)
    assert not np.allclose(e_animation, e_second, atol=1e-2)


def test_sixteen_bit_samples_are_scaled_not_clipped(gateway: SimpleNamespace) -> None:
    """65535 is white and 32896 mid-grey (grey 16-bit); 48-bit RGB keeps its high bytes."""
    grey = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (40, 1))
    grey16 = Image.fromarray(grey.astype(np.uint16) * 257)
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[:, :16], rgb[:, 16:] = (0x40, 0x80, 0x20), (0xC0, 0x10, 0xF0)
    row16 = (rgb[0].astype(">u2") * 257).tobytes()
    rgb48 = png_from_rows(32, 24, 16, 2, b"\x00" + row16)
    e = embed(
        gateway,
        encode(grey16, "PNG"),
        encode(Image.fromarray(grey), "PNG"),
        rgb48,
        encode(Image.fromarray(rgb), "PNG"),
    )
    assert np.allclose(e[0], e[1], atol=1e-5) and np.allclose(e[2], e[3], atol=1e-5)


def test_cmyk_is_served_like_its_rgb_conversion(gateway: SimpleNamespace) -> None:
    cmyk = Image.new("CMYK", (48, 40), (0, 200, 200, 0))
    cmyk.paste((200, 0, 0, 50), (0, 0, 24, 40))
    e_cmyk, e_rgb = embed(gateway, encode(cmyk, "TIFF"), encode(cmyk.convert("RGB"), "PNG"))
    assert np.allclose(e_cmyk, e_rgb, atol=1e-5)


# --- after everything -----------------------------------------------------------------------------------


def test_the_gateway_is_unharmed(gateway: SimpleNamespace) -> None:
    """Runs last in this module: the gateway took the whole corpus above."""
    client = gateway.client
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    blobs = [encode(WORLD.sample("eval", 5 + 13 * i)[0], "PNG") for i in range(4)]
    response = client.post("/v1/classify", json={"images": [b64(b) for b in blobs], "labels": LABELS})
    assert response.status_code == 200, response.text
    expected = Reference().scores(blobs, LABELS, None)
    assert np.abs(as_matrix(response.json(), LABELS) - expected).max() <= 1e-5
    assert (as_matrix(response.json(), LABELS).argmax(1) == expected.argmax(1)).all()
    metrics = client.get("/metrics").text
    statuses = set(re.findall(r'^lit_requests_total\{[^}]*status="(\d+)"', metrics, re.M))
    assert {"200", "400", "404", "405", "413", "415", "422"} <= statuses, statuses
    assert not {s for s in statuses if s.startswith("5")}, statuses
    log = Path(gateway.log).read_text()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
