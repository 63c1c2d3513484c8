"""The Python client: every /v1 method, sync and async, against one real gateway process (with an API key)
and one serving two models (plus a third that fails to load), plus retries through a small local HTTP
server that answers 429/503 before forwarding.

Results must equal the server's own JSON and the reference scores (within 1e-5); every failure is a
``LitError`` carrying the server's status, code, message and request id.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from harness.gateway import ROOT, free_port, running_gateway
from harness.images import LABELS
from harness.repositories import pair_environment
from lit_client import (
    AsyncLitClient,
    ClassifyResult,
    Embeddings,
    LabelSet,
    LitClient,
    LitError,
    ModelInfo,
    Models,
    calls,
)
from tests.samples import Reference, as_matrix, images

KEY = "client-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODES = ["sync", "async"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("gw"), LIT_API_KEYS=json.dumps([KEY])) as url:
        yield url


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway serving lit_demo and lit_other (the default), and naming lit_missing, which fails to load."""
    work = tmp_path_factory.mktemp("pair")
    with running_gateway(work, **pair_environment(work), LIT_API_KEYS=json.dumps([KEY])) as url:
        yield url


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


def call(mode: str, url: str, method: str, *args: Any, client: dict[str, Any] | None = None, **kwargs: Any):
    """``method`` of a ``LitClient`` (mode "sync") or an ``AsyncLitClient`` (mode "async")."""
    options = {"api_key": KEY, **(client or {})}
    if mode == "sync":
        with LitClient(url, **options) as lit:
            return getattr(lit, method)(*args, **kwargs)

    async def run() -> Any:
        async with AsyncLitClient(url, **options) as lit:
            return await getattr(lit, method)(*args, **kwargs)

    return asyncio.run(run())


def raw(url: str, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{url}{path}", headers=AUTH, timeout=60, **kwargs)
    assert response.is_success, response.text
    return response.json()


def close(a: Any, b: Any) -> bool:
    return np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-5


@pytest.mark.parametrize("mode", MODES)
def test_models_is_the_servers_answer(server: str, mode: str) -> None:
    info = call(mode, server, "models")
    assert isinstance(info, Models) and isinstance(info, ModelInfo)  # the default's fields at the top level
    assert asdict(info) == raw(server, "GET", "/v1/models")
    assert (info.name, info.version, info.state, info.default) == ("lit_demo", 1, "ready", "lit_demo")
    one = call(mode, server, "model", "lit_demo")
    assert info.models == [one]
    assert asdict(one) == raw(server, "GET", "/v1/models/lit_demo")


@pytest.mark.parametrize("mode", MODES)
def test_models_of_a_gateway_with_several(pair: str, mode: str) -> None:
    info = call(mode, pair, "models")
    assert asdict(info) == raw(pair, "GET", "/v1/models")
    assert (info.default, info.name) == ("lit_other", "lit_other")
    assert [(m.name, m.state) for m in info.models] == [
        ("lit_demo", "ready"),
        ("lit_other", "ready"),
        ("lit_missing", "failed"),
    ]
    demo, missing = info.get("lit_demo"), info.get("lit_missing")
    assert demo is not None and (demo.version, demo.embed_dim, demo.image_size) == (1, 256, 64)
    assert missing is not None and "lit_missing" in (missing.error or "")
    assert (missing.version, missing.backend, missing.embed_dim, missing.providers) == (None, None, None, [])
    assert info.get("nope") is None
    assert call(mode, pair, "model", "lit_missing") == missing
    with pytest.raises(LitError) as caught:
        call(mode, pair, "model", "nope")
    assert (caught.value.status, caught.value.code) == (404, "unknown_model")


def test_model_goes_in_each_request_body_only_when_given() -> None:
    blob = images(1)[0]
    assert calls.classify(blob, labels=["a"], model="m2").content["data"]["model"] == "m2"
    assert calls.embed_images(blob, model="m2").content["data"] == {"model": "m2"}
    assert calls.embed_texts(["a"], model="m2").content["json"] == {"texts": ["a"], "model": "m2"}
    assert calls.put_label_set("s", ["a"], model="m2").content["json"] == {"labels": ["a"], "model": "m2"}
    assert "model" not in calls.classify(blob, labels=["a"]).content["data"]
    assert "model" not in calls.embed_images(blob).content["data"]
    assert "model" not in calls.embed_texts(["a"]).content["json"]
    assert "model" not in calls.put_label_set("s", ["a"], ["a {}."]).content["json"]
    assert calls.model("a/b").path == "/v1/models/a%2Fb"


@pytest.mark.parametrize("mode", MODES)
def test_each_call_is_answered_by_the_model_it_names(pair: str, reference: Reference, mode: str) -> None:
    blobs, texts = images(2, offset=11), ["a red circle", "a blue square"]
    for model, expected in ((None, "lit_other"), ("lit_demo", "lit_demo"), ("lit_other", "lit_other")):
        result = call(mode, pair, "classify", blobs, labels=LABELS, model=model)
        assert result.model.name == expected
        assert close(as_matrix(asdict(result), LABELS), reference.scores(blobs, LABELS, None))
        assert call(mode, pair, "embed_images", blobs, model=model).model.name == expected
        assert call(mode, pair, "embed_texts", texts, model=model).model.name == expected

    name = f"pair-{mode}"
    stored = call(mode, pair, "put_label_set", name, LABELS, templates=["a {}."], model="lit_demo")
    assert (stored.name, stored.labels) == (name, LABELS)
    for model in ("lit_demo", "lit_other"):  # a label set belongs to no model
        result = call(mode, pair, "classify", blobs, label_set=name, model=model)
        assert result.model.name == model
        assert close(as_matrix(asdict(result), LABELS), reference.scores(blobs, LABELS, ["a {}."]))
    call(mode, pair, "delete_label_set", name)

    for method, args in (
        ("classify", (blobs,)),
        ("embed_images", (blobs,)),
        ("embed_texts", (texts,)),
        ("put_label_set", (name, LABELS)),
    ):
        kwargs = {"labels": LABELS} if method == "classify" else {}
        with pytest.raises(LitError) as caught:
            call(mode, pair, method, *args, model="nope", **kwargs)
        assert (caught.value.status, caught.value.code) == (404, "unknown_model"), method
        with pytest.raises(LitError) as caught:
            call(mode, pair, method, *args, model="lit_missing", client={"retries": 0}, **kwargs)
        assert (caught.value.status, caught.value.code) == (503, "not_ready"), method


@pytest.mark.parametrize("mode", MODES)
def test_classify_paths_bytes_and_files_score_like_the_reference(
    server: str, reference: Reference, mode: str, tmp_path: Path
) -> None:
    blobs = images(3)
    path = tmp_path / "first.png"
    path.write_bytes(blobs[0])
    result = call(mode, server, "classify", [path, blobs[1], io.BytesIO(blobs[2])], labels=LABELS)
    assert isinstance(result, ClassifyResult)
    assert (result.model.name, result.model.version) == ("lit_demo", 1)
    assert len(result.results) == 3
    got = as_matrix(asdict(result), LABELS)
    assert close(got, reference.scores(blobs, LABELS, None))
    server_json = raw(
        server, "POST", "/v1/classify", data={"labels": LABELS}, files=[("images", b) for b in blobs]
    )
    assert close(got, as_matrix(server_json, LABELS))
    assert [r.top.label for r in result.results] == [
        r["predictions"][0]["label"] for r in server_json["results"]
    ]


@pytest.mark.parametrize("mode", MODES)
def test_classify_with_templates_and_top_k(server: str, reference: Reference, mode: str) -> None:
    blobs, templates = images(2, offset=3), ["a {} shape.", "a picture of a {}."]
    result = call(mode, server, "classify", blobs, labels=LABELS, templates=templates, top_k=3)
    expected = reference.scores(blobs, LABELS, templates)
    for row, scores in zip(result.results, expected, strict=True):
        best = np.argsort(-scores)[:3]
        assert [p.label for p in row.predictions] == [LABELS[i] for i in best]
        assert close([p.score for p in row.predictions], scores[best])


@pytest.mark.parametrize("mode", MODES)
def test_label_sets_round_trip_and_classify_with_one(server: str, reference: Reference, mode: str) -> None:
    name = f"client-{mode}"
    stored = call(mode, server, "put_label_set", name, LABELS, templates=["a {}."])
    assert isinstance(stored, LabelSet)
    assert (stored.name, stored.labels, stored.templates) == (name, LABELS, ["a {}."])
    assert asdict(call(mode, server, "label_set", name)) == raw(server, "GET", f"/v1/label-sets/{name}")
    listed = call(mode, server, "label_sets")
    assert [asdict(s) for s in listed] == raw(server, "GET", "/v1/label-sets")
    assert {s.name: s.count for s in listed}[name] == len(LABELS)

    blobs = images(2, offset=5)
    result = call(mode, server, "classify", blobs, label_set=name)
    assert close(as_matrix(asdict(result), LABELS), reference.scores(blobs, LABELS, ["a {}."]))

    assert call(mode, server, "delete_label_set", name) is None
    assert name not in [s.name for s in call(mode, server, "label_sets")]
    with pytest.raises(LitError) as caught:
        call(mode, server, "label_set", name)
    assert (caught.value.status, caught.value.code) == (404, "unknown_label_set")


@pytest.mark.parametrize("mode", MODES)
def test_embeddings_are_the_servers(server: str, reference: Reference, mode: str) -> None:
    blobs, texts = images(2, offset=9), ["a photo of a red circle.", "a blue square"]
    image_emb = call(mode, server, "embed_images", blobs)
    text_emb = call(mode, server, "embed_texts", texts)
    for emb, count in ((image_emb, 2), (text_emb, 2)):
        assert isinstance(emb, Embeddings)
        assert emb.dim == reference.manifest.embed_dim
        assert np.array(emb.embeddings).shape == (count, emb.dim)
    image_json = raw(server, "POST", "/v1/embed/image", files=[("images", b) for b in blobs])
    text_json = raw(server, "POST", "/v1/embed/text", json={"texts": texts})
    assert close(image_emb.embeddings, image_json["embeddings"])
    assert close(text_emb.embeddings, text_json["embeddings"])
    assert asdict(text_emb)["model"] == text_json["model"]


@pytest.mark.parametrize("mode", MODES)
def test_unknown_label_set_raises_lit_error(server: str, mode: str) -> None:
    with pytest.raises(LitError) as caught:
        call(mode, server, "classify", images(1), label_set="no-such-set")
    error = caught.value
    assert (error.status, error.code) == (404, "unknown_label_set")
    assert "no-such-set" in error.message
    assert error.request_id
    with pytest.raises(LitError) as caught:
        call(mode, server, "delete_label_set", "no-such-set")
    assert caught.value.code == "unknown_label_set"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("blob", [b"this is not an image", images(1)[0][:60]], ids=["text", "truncated_png"])
def test_a_bad_image_raises_the_servers_code(server: str, mode: str, blob: bytes) -> None:
    answer = httpx.post(
        f"{server}/v1/classify", headers=AUTH, data={"labels": LABELS}, files=[("images", blob)], timeout=60
    )
    assert answer.status_code in (400, 415)
    with pytest.raises(LitError) as caught:
        call(mode, server, "classify", [images(1)[0], blob], labels=LABELS)
    assert caught.value.status == answer.status_code
    assert (caught.value.code, caught.value.message) == (
        answer.json()["error"]["code"],
        answer.json()["error"]["message"],
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_missing_or_wrong_key_is_unauthorized(server: str, mode: str, key: str | None) -> None:
    with pytest.raises(LitError) as caught:
        call(mode, server, "label_sets", client={"api_key": key})
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert "401 unauthorized" in str(caught.value)


# --- retries ----------------------------------------------------------------------------------------------


class Flaky(ThreadingHTTPServer):
    """Answers the first ``failures`` requests with ``status`` (and ``retry_after``), forwards the rest."""

    def __init__(
        self, upstream: str, failures: int, status: int = 429, retry_after: str | None = "0"
    ) -> None:
        super().__init__(("127.0.0.1", free_port()), ForwardOrRefuse)
        self.upstream, self.failures, self.status, self.retry_after = upstream, failures, status, retry_after
        self.seen: list[float] = []
        self.requests: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ForwardOrRefuse(BaseHTTPRequestHandler):
    server: Flaky

    def answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with self.server.lock:
            self.server.seen.append(time.monotonic())
            self.server.requests.append((self.headers.get("content-type", ""), body))
            refuse = len(self.server.seen) <= self.server.failures
        if refuse:
            status, content = (
                self.server.status,
                json.dumps({"error": {"code": "overloaded", "message": "busy"}}),
            )
            headers = {"content-type": "application/json", "x-request-id": f"flaky-{len(self.server.seen)}"}
            if self.server.retry_after is not None:
                headers["retry-after"] = self.server.retry_after
            content_bytes = content.encode()
        else:
            forward = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            reply = httpx.request(
                self.command, self.server.upstream + self.path, headers=forward, content=body, timeout=60
            )
            status, content_bytes = reply.status_code, reply.content
            headers = {
                k: v for k, v in reply.headers.items() if k.lower() in ("content-type", "x-request-id")
            }
        self.send_response(status)
        for name, value in {**headers, "content-length": str(len(content_bytes))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content_bytes)

    do_GET = do_POST = do_PUT = do_DELETE = answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky(server: str, request: pytest.FixtureRequest) -> Iterator[Flaky]:
    proxy = Flaky(server, **request.param)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


FAST = {"backoff_s": 0.01}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "flaky",
    [{"failures": 2}, {"failures": 2, "status": 503, "retry_after": None}],
    indirect=True,
    ids=["429", "503"],
)
def test_429_and_503_are_retried_until_the_call_succeeds(
    server: str, flaky: Flaky, reference: Reference, mode: str
) -> None:
    blobs = images(1)
    result = call(mode, flaky.url, "classify", blobs, labels=LABELS, client={"retries": 3, **FAST})
    assert len(flaky.seen) == 3
    assert close(as_matrix(asdict(result), LABELS), reference.scores(blobs, LABELS, None))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("flaky", [{"failures": 100}], indirect=True)
def test_retries_stop_after_the_bound(flaky: Flaky, mode: str) -> None:
    with pytest.raises(LitError) as caught:
        call(mode, flaky.url, "models", client={"retries": 2, **FAST})
    assert len(flaky.seen) == 3  # the first attempt and two retries
    error = caught.value
    assert (error.status, error.code, error.message, error.request_id) == (
        429,
        "overloaded",
        "busy",
        "flaky-3",
    )


@pytest.mark.parametrize("flaky", [{"failures": 1, "retry_after": "1"}], indirect=True)
def test_retry_after_is_waited_for(flaky: Flaky) -> None:
    info = call("sync", flaky.url, "models", client=FAST)
    assert info.name == "lit_demo"
    assert len(flaky.seen) == 2
    assert 1.0 <= flaky.seen[1] - flaky.seen[0] < 2.0


@pytest.mark.parametrize("flaky", [{"failures": 1, "retry_after": "30"}], indirect=True)
def test_a_retry_after_beyond_the_cap_is_not_waited_for(flaky: Flaky) -> None:
    began = time.monotonic()
    with pytest.raises(LitError) as caught:
        call("sync", flaky.url, "models", client={"max_backoff_s": 5.0})
    assert caught.value.status == 429
    assert len(flaky.seen) == 1
    assert time.monotonic() - began < 5


@pytest.mark.parametrize("flaky", [{"failures": 0}], indirect=True)
def test_other_errors_are_not_retried(flaky: Flaky) -> None:
    with pytest.raises(LitError) as caught:
        call("sync", flaky.url, "label_set", "no-such-set")
    assert caught.value.code == "unknown_label_set"
    assert len(flaky.seen) == 1


@pytest.mark.parametrize("mode", MODES)
def test_no_server_is_a_connection_error_after_the_retries(mode: str) -> None:
    began = time.monotonic()
    with pytest.raises(LitError) as caught:
        call(mode, f"http://127.0.0.1:{free_port()}", "models", client={"retries": 2, **FAST})
    assert (caught.value.status, caught.value.code) == (None, "connection_error")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert time.monotonic() - began < 5


def test_the_client_needs_neither_numpy_nor_the_service() -> None:
    code = (
        "import sys, lit_client, lit_client.cli; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('numpy', 'torch', 'service', 'onnxruntime')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("flaky", [{"failures": 0}], indirect=True)
def test_images_go_as_multipart_file_parts(flaky: Flaky) -> None:
    """No base64: the body holds the image's own bytes."""
    blob = images(1)[0]
    call("sync", flaky.url, "classify", blob, labels=LABELS[:2])
    content_type, body = flaky.requests[0]
    assert content_type.startswith("multipart/form-data")
    assert blob in body
    assert len(body) < len(blob) + 1000
