"""The gateway on a real Triton Inference Server (``tritonserver`` from nvidia-pytriton), HTTP and gRPC.

Each gateway is a real uvicorn process; the reference is the same gateway on the embedded backend.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.gateway import REPOSITORY, running_gateway
from harness.images import LABELS
from harness.metrics import metric
from lit_bundle.manifest import manifest_path
from lit_bundle.repository import load_bundle, promote
from tests.samples import Reference, as_matrix, images
from tests.triton_server import TritonServer, python_backend_repository, running_triton

PROTOCOLS = ["http", "grpc"]
IMAGE_MODEL = 'model="lit_demo_image",version="1"'


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with running_triton(REPOSITORY, tmp_path_factory.mktemp("triton")) as server:
        yield server


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("embedded")) as url:
        yield url


@pytest.fixture(scope="module", params=PROTOCOLS)
def gateway(
    request: pytest.FixtureRequest, triton: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp(f"gateway-{request.param}")
    with running_gateway(workdir, **triton.gateway_env(request.param)) as url:
        yield url


def classify(url: str, blobs: list[bytes], encoding: str = "json", **fields) -> httpx.Response:
    if encoding == "json":
        body = {"images": [base64.b64encode(b).decode() for b in blobs], **fields}
        return httpx.post(f"{url}/v1/classify", json=body, timeout=60)
    files = [("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(blobs)]
    return httpx.post(f"{url}/v1/classify", data=fields, files=files, timeout=60)


@pytest.mark.parametrize("count", [1, 8])
@pytest.mark.parametrize("templates", [None, ["a {} shape.", "a picture of a {}."]])
@pytest.mark.parametrize("encoding", ["json", "multipart"])
def test_classify_scores_equal_the_embedded_backend(
    gateway: str, embedded: str, count: int, templates, encoding: str
) -> None:
    blobs = images(count, offset=count)
    fields = {"labels": LABELS, **({"templates": templates} if templates else {})}
    on_triton, on_embedded = (
        classify(gateway, blobs, encoding, **fields),
        classify(embedded, blobs, encoding, **fields),
    )
    assert on_triton.status_code == 200, on_triton.text
    assert on_embedded.status_code == 200, on_embedded.text
    assert on_triton.json()["model"] == on_embedded.json()["model"] == {"name": "lit_demo", "version": 1}
    difference = np.abs(as_matrix(on_triton.json(), LABELS) - as_matrix(on_embedded.json(), LABELS))
    assert difference.max() <= 1e-5


def test_embeddings_equal_the_embedded_backend(gateway: str, embedded: str) -> None:
    body = {"images": [base64.b64encode(b).decode() for b in images(3)]}
    texts = {"texts": [f"a photo of a {label}." for label in LABELS] * 30}  # 300 texts: several batches
    for route, payload in (("embed/image", body), ("embed/text", texts)):
        a = httpx.post(f"{gateway}/v1/{route}", json=payload, timeout=60)
        b = httpx.post(f"{embedded}/v1/{route}", json=payload, timeout=60)
        assert a.status_code == b.status_code == 200, a.text
        assert np.abs(np.array(a.json()["embeddings"]) - np.array(b.json()["embeddings"])).max() <= 1e-5


def test_models_and_readiness_report_triton(gateway: str, triton: TritonServer) -> None:
    info = httpx.get(f"{gateway}/v1/models").json()
    assert info["backend"] == "triton"
    assert info["backend_version"] == "triton 2.51.0"
    assert any(str(triton.http_port) in p or str(triton.grpc_port) in p for p in info["providers"])
    ready = httpx.get(f"{gateway}/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == {"name": "lit_demo", "version": 1}
    assert metric(gateway, "lit_backend_up") == 1


def test_label_sets_work_on_triton(gateway: str, tmp_path: Path) -> None:
    put = httpx.put(f"{gateway}/v1/label-sets/shapes", json={"labels": LABELS}, timeout=60)
    assert put.status_code == 200, put.text
    blobs = images(2)
    response = classify(gateway, blobs, label_set="shapes")
    assert response.status_code == 200, response.text
    expected = Reference().scores(blobs, LABELS, None)
    assert np.abs(as_matrix(response.json(), LABELS) - expected).max() <= 1e-5


def test_tritons_dynamic_batcher_batches_concurrent_clients(gateway: str, triton: TritonServer) -> None:
    blobs = images(32, offset=500)
    expected = Reference().scores(blobs, LABELS, None).argmax(axis=1)
    classify(gateway, blobs[:1], labels=LABELS)  # labels cached: only image requests reach Triton below
    before = triton.metrics()

    async def clients() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=gateway, timeout=60, limits=limits) as client:
            bodies = [{"images": [base64.b64encode(b).decode()], "labels": LABELS} for b in blobs]
            return await asyncio.gather(*(client.post("/v1/classify", json=body) for body in bodies))

    responses = asyncio.run(clients())
    assert [r.status_code for r in responses] == [200] * 32
    top = [LABELS.index(r.json()["results"][0]["predictions"][0]["label"]) for r in responses]
    assert top == list(expected)
    after = triton.metrics()
    requests = metric(after, f"nv_inference_request_success{{{IMAGE_MODEL}}}") - metric(
        before, f"nv_inference_request_success{{{IMAGE_MODEL}}}"
    )
    executions = metric(after, f"nv_inference_exec_count{{{IMAGE_MODEL}}}") - metric(
        before, f"nv_inference_exec_count{{{IMAGE_MODEL}}}"
    )
    print(f"\nTriton: {requests:.0f} image requests in {executions:.0f} executions")
    assert requests == 32
    assert executions < requests


def add_version(repository: Path, source: int, logit_scale: float) -> int:
    """Copy version ``source`` of lit_demo as the next version with another logit scale, and promote it."""
    bundle = load_bundle(repository, "lit_demo", source)
    new = source + 1
    for encoder in (bundle.manifest.image_encoder, bundle.manifest.text_encoder):
        shutil.copytree(
            repository / encoder.triton_name / str(source), repository / encoder.triton_name / str(new)
        )
    path = manifest_path(repository, "lit_demo", new)
    text = path.read_text().replace(f"/{source}/", f"/{new}/")
    manifest = json.loads(text)
    manifest.update(version=new, logit_scale=logit_scale)
    path.write_text(json.dumps(manifest, indent=2))
    promote(repository, "lit_demo", new)
    return new


def test_the_gateway_asks_triton_for_the_repositorys_active_version(tmp_path: Path) -> None:
    repository = shutil.copytree(REPOSITORY, tmp_path / "repository")
    version = add_version(repository, 1, logit_scale=5.0)
    blobs = images(4)
    with running_triton(repository, tmp_path / "triton") as triton:
        env = triton.gateway_env("grpc", LIT_REPOSITORY=str(repository))
        with running_gateway(tmp_path, **env) as url:
            assert httpx.get(f"{url}/v1/models").json()["version"] == version
            response = classify(url, blobs, labels=LABELS)
            assert response.status_code == 200, response.text
            assert response.json()["model"] == {"name": "lit_demo", "version": version}
            expected = Reference(repository).scores(blobs, LABELS, None)  # logit scale 5: not version 1's
            assert np.abs(as_matrix(response.json(), LABELS) - expected).max() <= 1e-5
        # The committed repository's active version is 1, which this Triton does not serve.
        (tmp_path / "stale").mkdir()
        env = triton.gateway_env("grpc")
        with running_gateway(tmp_path / "stale", ready_path="/healthz", **env) as url:
            ready = httpx.get(f"{url}/readyz")
            assert ready.status_code == 503
            assert "has not loaded lit_demo_image version 1" in ready.json()["error"]["message"]
            response = classify(url, blobs, labels=LABELS)
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "backend_unavailable"


def wait_for(check, seconds: float) -> float:
    """Poll ``check()`` until it is true; return how long it took, failing if that was over ``seconds``."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < seconds, f"not within {seconds} s"
        time.sleep(0.1)
    took = time.monotonic() - began
    assert took <= seconds, f"took {took:.1f} s, more than {seconds} s"
    return took


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_triton_outage_gives_503_and_recovers_without_a_gateway_restart(
    tmp_path: Path, protocol: str
) -> None:
    """Once Triton has stopped, requests get a clear 503 and /readyz turns 503; once it is back, requests
    succeed with no gateway restart. (While Triton drains after SIGTERM, up to its --exit-timeout-secs, it
    still answers over open HTTP connections, so the gateway keeps serving until it exits.)"""
    blobs = images(1)
    with (
        running_triton(REPOSITORY, tmp_path / "triton") as triton,
        running_gateway(tmp_path, **triton.gateway_env(protocol)) as url,
    ):
        assert classify(url, blobs, labels=LABELS).status_code == 200
        triton.stop()
        failed: list[httpx.Response] = []

        def refused() -> bool:
            failed[:] = [classify(url, blobs, labels=[*LABELS, "never cached"])]
            return failed[0].status_code == 503 and httpx.get(f"{url}/readyz").status_code == 503

        took = wait_for(refused, 5)
        error = failed[0].json()["error"]
        assert error["code"] == "backend_unavailable"
        assert f"Triton at {triton.url(protocol)}" in error["message"] and "check that" in error["message"]
        reason = httpx.get(f"{url}/readyz").json()["error"]["message"]
        assert f"Triton at {triton.url(protocol)}" in reason and "not reachable" in reason, reason
        assert metric(url, "lit_backend_up") == 0 and metric(url, "lit_backend_errors_total") >= 1
        print(f"\n{protocol}: 503s and /readyz 503 {took:.1f} s after Triton stopped")

        triton.start()
        back = wait_for(lambda: classify(url, blobs, labels=LABELS).status_code == 200, 10)
        assert httpx.get(f"{url}/readyz").status_code == 200
        print(f"{protocol}: requests succeed {back:.1f} s after Triton was ready again")


def test_triton_serving_other_tensors_than_the_manifest_is_named(tmp_path: Path) -> None:
    mirror = python_backend_repository(REPOSITORY, tmp_path / "repository")
    config = mirror / "lit_demo_image" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "pixels"', 'name: "image"'))
    triton = TritonServer(mirror, tmp_path)
    try:
        triton.start()
        with running_gateway(tmp_path, ready_path="/healthz", **triton.gateway_env("grpc")) as url:
            reason = httpx.get(f"{url}/readyz").json()["error"]["message"]
            assert "('image', 'UINT8')" in reason and "('pixels', 'UINT8')" in reason, reason
            assert "same model repository" in reason
            response = classify(url, images(1), labels=LABELS)
            assert response.status_code == 502 and response.json()["error"]["code"] == "backend_error"
    finally:
        triton.stop()
