"""Every error status of the HTTP API, from real gateway processes, with the documented error body.

Each bad request is sent as JSON (base64 images) and, where it applies, as multipart. Every error must be
``{"error": {"code": "<snake_case>", "message": "<non-empty>"}}`` with an ``X-Request-ID`` header, and the
shared gateway must still classify correctly after all of them.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.gateway import running_gateway
from harness.images import LABELS, WORLD, encode
from tests.samples import Reference, as_matrix, images
from tests.test_decode import blank_png, photo

SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n"
SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    b'<rect width="64" height="64" fill="red"/></svg>\n'
)


def truncated_jpeg() -> bytes:
    data = encode(photo(64, 64), "JPEG")
    return data[: len(data) // 2]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def classify(client: httpx.Client, encoding: str, blobs: list[bytes], **fields: Any) -> httpx.Response:
    """POST /v1/classify as JSON (base64) or multipart; ``fields`` are labels, label_set, templates, top_k."""
    if encoding == "json":
        return client.post("/v1/classify", json={"images": [b64(b) for b in blobs], **fields})
    files = [("images", (f"{i}.bin", b, "application/octet-stream")) for i, b in enumerate(blobs)]
    data = {k: v if isinstance(v, list) else str(v) for k, v in fields.items()}
    return client.post("/v1/classify", data=data, files=files)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    """The documented error body and headers; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.headers.get("x-request-id"), "every response carries X-Request-ID"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert SNAKE_CASE.fullmatch(body["error"]["code"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip(), body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("gw")) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as session:
        yield session


# --- images: 400, 413, 415 --------------------------------------------------------------------------

IMAGE_CASES = {
    "truncated_jpeg": (truncated_jpeg(), 400, "undecodable_image"),
    "zero_bytes": (b"", 400, "empty_image"),
    "pdf": (PDF, 415, "unsupported_image_format"),
    "svg": (SVG, 415, "unsupported_image_format"),
    "png_bomb_20000x20000": (blank_png(20_000, 20_000), 413, "image_too_many_pixels"),
}


@pytest.mark.parametrize("encoding", ["json", "multipart"])
@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_bad_images(client: httpx.Client, case: str, encoding: str) -> None:
    data, status, code = IMAGE_CASES[case]
    good = images(1)[0]
    started = time.perf_counter()
    response = classify(client, encoding, [good, data], labels=LABELS)
    assert_error(response, status, code)
    assert time.perf_counter() - started < 5, "refused without decoding a bomb's pixels"
    # The same image through the embedding route.
    if encoding == "json":
        response = client.post("/v1/embed/image", json={"images": [b64(data)]})
    else:
        response = client.post("/v1/embed/image", files=[("images", ("x.bin", data, "image/png"))])
    assert_error(response, status, code)


def test_bomb_is_small_on_the_wire() -> None:
    assert len(IMAGE_CASES["png_bomb_20000x20000"][0]) < 100_000


@pytest.mark.parametrize(
    "text",
    ["this is not base64!", "abcde", "data:image/png,iVBORw0KGgo=", "https://example.com/cat.jpg"],
)
def test_wrong_base64(client: httpx.Client, text: str) -> None:
    response = client.post("/v1/classify", json={"images": [text], "labels": LABELS})
    assert_error(response, 400, "invalid_base64")
    assert_error(client.post("/v1/embed/image", json={"images": [text]}), 400, "invalid_base64")


@pytest.mark.parametrize("encoding", ["json", "multipart"])
def test_no_images(client: httpx.Client, encoding: str) -> None:
    if encoding == "json":
        response = client.post("/v1/classify", json={"images": [], "labels": LABELS})
    else:
        response = client.post("/v1/classify", data={"labels": LABELS}, files=[("other", ("a", b"x"))])
    assert_error(response, 400, "no_images")


# --- labels: 400, 404, 413, 422 ----------------------------------------------------------------------

LABEL_CASES = {
    "zero_labels": ({"labels": []}, 400, "empty_labels"),
    "blank_label": ({"labels": ["cat", "  "]}, 400, "blank_label"),
    "5000_labels": ({"labels": [f"label {i}" for i in range(5000)]}, 413, "too_many_labels"),
    "301_char_label": ({"labels": ["cat", "x" * 301]}, 422, "label_too_long"),
    "neither_labels_nor_set": ({}, 400, "labels_required"),
    "labels_and_set": ({"labels": LABELS, "label_set": "shapes"}, 400, "labels_required"),
    "unknown_label_set": ({"label_set": "no-such-set"}, 404, "unknown_label_set"),
    "template_without_slot": ({"labels": LABELS, "templates": ["a photo"]}, 422, "invalid_template"),
}


@pytest.mark.parametrize("encoding", ["json", "multipart"])
@pytest.mark.parametrize("case", list(LABEL_CASES))
def test_bad_labels(client: httpx.Client, case: str, encoding: str) -> None:
    fields, status, code = LABEL_CASES[case]
    if encoding == "multipart" and case == "zero_labels":
        status, code = 400, "labels_required"  # multipart cannot send an empty list: no labels field at all
    assert_error(classify(client, encoding, images(1), **fields), status, code)


def test_exactly_at_the_limits_is_accepted(client: httpx.Client) -> None:
    """300 characters is allowed (301 is not); 4,096 labels are allowed (5,000 are not)."""
    labels = ["y" * 300, *[f"thing {i}" for i in range(4095)]]
    response = classify(client, "json", images(1), labels=labels, top_k=3)
    assert response.status_code == 200, response.text
    assert len(response.json()["results"][0]["predictions"]) == 3


def test_unknown_label_set_routes(client: httpx.Client) -> None:
    assert_error(client.get("/v1/label-sets/no-such-set"), 404, "unknown_label_set")
    assert_error(client.delete("/v1/label-sets/no-such-set"), 404, "unknown_label_set")
    assert_error(client.get("/v1/label-sets/not%20a%20valid%20name"), 404, "unknown_label_set")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"labels": []}, 400, "empty_labels"),
        ({"labels": ["cat", "x" * 301]}, 422, "label_too_long"),
        ({"labels": [str(i) for i in range(50_001)]}, 413, "too_many_labels"),
        ({"labels": ["cat"], "templates": ["no slot"]}, 422, None),
        ({"labels": ["cat"], "unknown": 1}, 422, "invalid_body"),
        ({"labels": "cat"}, 422, "invalid_body"),
    ],
)
def test_bad_label_set_bodies(client: httpx.Client, body: dict, status: int, code: str | None) -> None:
    assert_error(client.put("/v1/label-sets/pets", json=body), status, code)
    assert_error(client.get("/v1/label-sets/pets"), 404, "unknown_label_set")  # nothing half-stored


def test_bad_label_set_name(client: httpx.Client) -> None:
    assert_error(client.put("/v1/label-sets/-bad.name-", json={"labels": ["cat"]}), 422)


# --- bodies: 413, 415, 422, 404 ----------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_unsupported_content_type(client: httpx.Client, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    for route in ["/v1/classify", "/v1/embed/image"]:
        response = client.post(route, content=b'{"images": []}', headers=headers)
        assert_error(response, 415, "unsupported_media_type")


SCHEMA_CASES = {
    "top_k_not_an_int": {"images": [], "labels": LABELS, "top_k": "three"},
    "top_k_zero": {"labels": LABELS, "top_k": 0},
    "top_k_negative": {"labels": LABELS, "top_k": -2},
    "unknown_field": {"labels": LABELS, "colour": "red"},
    "missing_images": {"labels": LABELS},
    "images_not_a_list": {"images": "abc", "labels": LABELS},
    "labels_not_a_list": {"labels": "cat"},
    "label_not_a_string": {"labels": ["cat", 3]},
}


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_schema_errors_json(client: httpx.Client, case: str) -> None:
    body = dict(SCHEMA_CASES[case])
    if case != "missing_images" and "images" not in body:
        body["images"] = [b64(images(1)[0])]
    message = assert_error(client.post("/v1/classify", json=body), 422, "invalid_body")
    assert "/docs" in message


@pytest.mark.parametrize("top_k", ["three", "0", "-2", "1.5"])
def test_schema_errors_multipart(client: httpx.Client, top_k: str) -> None:
    assert_error(classify(client, "multipart", images(1), labels=LABELS, top_k=top_k), 422, "invalid_body")


@pytest.mark.parametrize("raw", [b"{not json", b"null", b"[1, 2]", b'"text"', b""])
def test_malformed_json(client: httpx.Client, raw: bytes) -> None:
    headers = {"content-type": "application/json"}
    assert_error(client.post("/v1/classify", content=raw, headers=headers), 422, "invalid_body")
    assert_error(client.post("/v1/embed/image", content=raw, headers=headers), 422, "invalid_body")
    assert_error(client.post("/v1/embed/text", content=raw, headers=headers), 422, "invalid_body")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"texts": []}, 400, "no_texts"),
        ({"texts": ["a"] * 5000}, 413, "too_many_texts"),
        ({"texts": "a"}, 422, "invalid_body"),
        ({"text": ["a"]}, 422, "invalid_body"),
    ],
)
def test_bad_embed_text(client: httpx.Client, body: dict, status: int, code: str) -> None:
    assert_error(client.post("/v1/embed/text", json=body), status, code)


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x", None])
def test_json_only_routes_refuse_other_media_types(client: httpx.Client, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/embed/text", content=b'{"texts": ["a"]}', headers=headers)
    assert_error(response, 415, "unsupported_media_type")
    response = client.put("/v1/label-sets/pets", content=b'{"labels": ["a"]}', headers=headers)
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=abc"])
def test_malformed_multipart(client: httpx.Client, content_type: str) -> None:
    response = client.post("/v1/classify", content=b"garbage", headers={"content-type": content_type})
    assert_error(response, 400, "invalid_multipart")


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.get("/nothing"), 404, "not_found")
    assert_error(client.get("/v1/classify"), 405, "method_not_allowed")


def test_request_id_is_echoed(client: httpx.Client) -> None:
    response = client.post("/v1/classify", json={"labels": LABELS}, headers={"X-Request-ID": "abc-123"})
    assert_error(response, 422)
    assert response.headers["x-request-id"] == "abc-123"
    first, second = client.get("/nope"), client.get("/nope")
    assert_error(first, 404)
    assert first.headers["x-request-id"] != second.headers["x-request-id"]  # fresh ids when none is sent


# --- a gateway with small limits: 413 body and image count, 429 full queue --------------------------

SMALL_BODY = 60_000


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    env = {"LIT_MAX_BODY_BYTES": str(SMALL_BODY), "LIT_MAX_IMAGES": "8", "LIT_MAX_QUEUE_IMAGES": "2"}
    with (
        running_gateway(tmp_path_factory.mktemp("small"), **env) as url,
        httpx.Client(base_url=url, timeout=60) as session,
    ):
        yield session


def big_blob() -> bytes:
    return np.random.default_rng(0).bytes(SMALL_BODY)


@pytest.mark.parametrize("encoding", ["json", "multipart"])
def test_body_over_the_limit(small: httpx.Client, encoding: str) -> None:
    assert_error(classify(small, encoding, [big_blob()], labels=LABELS), 413, "body_too_large")


def test_chunked_body_over_the_limit(small: httpx.Client) -> None:
    """No Content-Length: the limit must still hold while the body streams in."""
    body = b'{"labels": ["cat"], "images": ["' + base64.b64encode(big_blob()) + b'"]}'

    def chunks(raw: bytes) -> Iterator[bytes]:
        for start in range(0, len(raw), 8192):
            yield raw[start : start + 8192]

    headers = {"content-type": "application/json"}
    for route in ["/v1/classify", "/v1/embed/image", "/v1/embed/text"]:
        response = small.post(route, content=chunks(body), headers=headers)
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "body_too_large")
    form = httpx.Request("POST", "/", data={"labels": ["cat"]}, files=[("images", ("a", big_blob()))])
    headers = {"content-type": form.headers["content-type"]}
    for route in ["/v1/classify", "/v1/embed/image"]:
        assert_error(small.post(route, content=chunks(form.read()), headers=headers), 413, "body_too_large")


@pytest.mark.parametrize("encoding", ["json", "multipart"])
@pytest.mark.parametrize("count", [9, 20])
def test_too_many_images(small: httpx.Client, encoding: str, count: int) -> None:
    tiny = encode(Image.new("RGB", (4, 4)), "PNG")
    assert_error(classify(small, encoding, [tiny] * count, labels=LABELS), 413, "too_many_images")


@pytest.mark.parametrize("encoding", ["json", "multipart"])
def test_full_queue_is_429_with_a_retry_hint(small: httpx.Client, encoding: str) -> None:
    response = classify(small, encoding, images(3), labels=LABELS)
    message = assert_error(response, 429, "overloaded")
    assert "retry" in message.lower()
    assert int(response.headers["retry-after"]) >= 1
    ok = classify(small, encoding, images(2), labels=LABELS)  # within the queue: served
    assert ok.status_code == 200, ok.text


def test_flood_gets_429s_and_never_errors(small: httpx.Client) -> None:
    """Many concurrent 2-image requests on a 2-image queue: each gets 200 or 429, nothing else."""

    async def flood() -> list[httpx.Response]:
        body = {"images": [b64(b) for b in images(2)], "labels": LABELS}
        limits = httpx.Limits(max_connections=24)
        async with httpx.AsyncClient(base_url=str(small.base_url), timeout=60, limits=limits) as session:
            return await asyncio.gather(*(session.post("/v1/classify", json=body) for _ in range(24)))

    responses = asyncio.run(flood())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    assert 200 in statuses
    for response in responses:
        if response.status_code == 429:
            assert_error(response, 429, "overloaded")
    assert small.get("/readyz").status_code == 200


# --- API keys: 401 -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with (
        running_gateway(tmp_path_factory.mktemp("keys"), LIT_API_KEYS='["k1"]') as url,
        httpx.Client(base_url=url, timeout=60) as session,
    ):
        yield session


V1_REQUESTS = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/label-sets", None),
    ("GET", "/v1/label-sets/pets", None),
    ("DELETE", "/v1/label-sets/pets", None),
    ("PUT", "/v1/label-sets/pets", {"labels": ["cat"]}),
    ("POST", "/v1/classify", {"images": [], "labels": ["cat"]}),
    ("POST", "/v1/embed/image", {"images": []}),
    ("POST", "/v1/embed/text", {"texts": ["a"]}),
]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}, {"Authorization": "k1"}, {"X-Api-Key": ""}],
    ids=["none", "wrong_bearer", "wrong_x_api_key", "no_bearer_prefix", "empty"],
)
def test_missing_or_wrong_key_is_401(keyed: httpx.Client, headers: dict[str, str]) -> None:
    for method, path, body in V1_REQUESTS:
        response = keyed.request(method, path, json=body, headers=headers)
        assert_error(response, 401, "unauthorized")
    # Authentication comes before parsing: a malformed body without a key is still 401.
    for path in ["/v1/classify", "/v1/embed/text", "/v1/label-sets/pets"]:
        method = "PUT" if "label-sets" in path else "POST"
        raw = keyed.request(
            method, path, content=b"{oops", headers={**headers, "content-type": "application/json"}
        )
        assert_error(raw, 401, "unauthorized")


@pytest.mark.parametrize(
    "headers", [{"Authorization": "Bearer k1"}, {"X-API-Key": "k1"}, {"authorization": "bearer k1"}]
)
def test_right_key_is_accepted(keyed: httpx.Client, headers: dict[str, str]) -> None:
    assert keyed.get("/v1/models", headers=headers).status_code == 200
    response = classify(keyed, "json", images(1), labels=LABELS, top_k=1)
    assert_error(response, 401)
    keyed.headers.update(headers)
    try:
        assert classify(keyed, "json", images(1), labels=LABELS, top_k=1).status_code == 200
        assert_error(keyed.get("/v1/label-sets/pets"), 404, "unknown_label_set")  # past auth, real errors
    finally:
        for name in headers:
            del keyed.headers[name]


def test_health_and_metrics_stay_open(keyed: httpx.Client) -> None:
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 200
    metrics = keyed.get("/metrics")
    assert metrics.status_code == 200 and 'status="401"' in metrics.text


# --- not ready: 503 -------------------------------------------------------------------------------------


def test_not_ready_is_503_with_the_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty_repository"
    empty.mkdir()
    with (
        running_gateway(tmp_path, "/healthz", LIT_REPOSITORY=str(empty)) as url,
        httpx.Client(base_url=url) as session,
    ):
        deadline = time.monotonic() + 30  # the load fails in the background; /readyz then says why
        while True:
            message = assert_error(session.get("/readyz"), 503, "not_ready")
            if "loading" not in message or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "loading" not in message and len(message) > 10, message
        for encoding in ["json", "multipart"]:
            response = classify(session, encoding, images(1), labels=LABELS)
            assert message in assert_error(response, 503, "not_ready")  # the same reason as /readyz
        assert_error(session.get("/v1/models"), 503, "not_ready")
        assert_error(session.post("/v1/embed/text", json={"texts": ["a"]}), 503, "not_ready")
        assert_error(session.post("/v1/embed/image", json={"images": [b64(images(1)[0])]}), 503, "not_ready")
        assert_error(session.put("/v1/label-sets/pets", json={"labels": ["cat"]}), 503, "not_ready")
        assert session.get("/v1/label-sets").json() == []  # what needs no model still works
        assert session.get("/healthz").status_code == 200
        assert 'status="503"' in session.get("/metrics").text


# --- timed out: 504 -------------------------------------------------------------------------------------


def test_timeout_is_504_and_the_server_recovers(tmp_path: Path) -> None:
    with (
        running_gateway(tmp_path, LIT_REQUEST_TIMEOUT_S="0.001", LIT_LABEL_SET_TIMEOUT_S="0.002") as url,
        httpx.Client(base_url=url, timeout=60) as session,
    ):
        labels = [f"timeout label {i}" for i in range(1000)]
        for encoding in ["json", "multipart"]:
            message = assert_error(classify(session, encoding, images(8), labels=labels), 504, "timeout")
            assert "0.001" in message
        assert_error(session.post("/v1/embed/text", json={"texts": labels}), 504, "timeout")
        message = assert_error(session.put("/v1/label-sets/slow", json={"labels": labels}), 504, "timeout")
        assert "0.002" in message and "LIT_LABEL_SET_TIMEOUT_S" in message  # its own, longer timeout
        assert_error(session.get("/v1/label-sets/slow"), 404)  # a timed-out PUT stores nothing
        assert session.get("/readyz").status_code == 200
        assert session.get("/v1/models").status_code == 200


def test_label_sets_have_their_own_timeout(tmp_path: Path) -> None:
    """Registering labels encodes all of them (minutes for thousands on a CPU): a request timeout that
    cancels classify requests leaves registration alone."""
    with (
        running_gateway(tmp_path, LIT_REQUEST_TIMEOUT_S="0.001") as url,
        httpx.Client(base_url=url, timeout=60) as session,
    ):
        labels = [f"long registration {i}" for i in range(1000)]
        put = session.put("/v1/label-sets/big", json={"labels": labels})
        assert put.status_code == 200, put.text
        assert len(session.get("/v1/label-sets/big").json()["labels"]) == 1000


# --- after everything: the shared gateway still answers correctly -------------------------------------


def requests_by_status(text: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for status, value in re.findall(
        r'^lit_requests_total\{[^}]*status="(\d+)"[^}]*\} ([0-9.e+]+)$', text, re.M
    ):
        counts[status] = counts.get(status, 0.0) + float(value)
    return counts


def test_still_answers_correctly_after_all_errors(client: httpx.Client) -> None:
    """Runs last in this module: the shared gateway took every bad request above."""
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    blobs = [encode(WORLD.sample("eval", 3 + 11 * i)[0], "PNG") for i in range(4)]
    for encoding in ["json", "multipart"]:
        response = classify(client, encoding, blobs, labels=LABELS)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == 4
        for result in results:
            scores = [p["score"] for p in result["predictions"]]
            assert sorted(p["label"] for p in result["predictions"]) == sorted(LABELS)
            assert scores == sorted(scores, reverse=True)
            assert abs(sum(scores) - 1.0) < 1e-4
        expected = Reference().scores(blobs, LABELS, None)
        assert np.abs(as_matrix(response.json(), LABELS) - expected).max() <= 1e-5
    counts = requests_by_status(client.get("/metrics").text)
    for status in ["200", "400", "404", "405", "413", "415", "422"]:
        assert counts.get(status, 0) >= 1, (status, counts)
    assert "500" not in counts, counts
