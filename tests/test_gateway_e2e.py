"""The gateway as a real uvicorn process on the committed demo model."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.gateway import running_gateway
from harness.images import LABELS, WORLD, encode
from harness.metrics import metric
from tests.samples import Reference, as_matrix, images


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("gw")) as url:
        yield url


@pytest.mark.parametrize("count", [1, 8])
@pytest.mark.parametrize("templates", [None, ["a {} shape.", "a picture of a {}."]])
@pytest.mark.parametrize("encoding", ["json", "multipart"])
def test_classify_scores_equal_the_reference(server: str, count: int, templates, encoding: str) -> None:
    blobs = images(count)
    if encoding == "json":
        body = {"images": [base64.b64encode(b).decode() for b in blobs], "labels": LABELS}
        if templates:
            body["templates"] = templates
        response = httpx.post(f"{server}/v1/classify", json=body, timeout=60)
    else:
        data = {"labels": LABELS, **({"templates": templates} if templates else {})}
        files = [("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(blobs)]
        response = httpx.post(f"{server}/v1/classify", data=data, files=files, timeout=60)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["model"] == {"name": "lit_demo", "version": 1}
    assert len(payload["results"]) == count
    for result in payload["results"]:
        scores = [p["score"] for p in result["predictions"]]
        assert scores == sorted(scores, reverse=True)
    expected = Reference().scores(blobs, LABELS, templates)
    assert np.abs(as_matrix(payload, LABELS) - expected).max() <= 1e-5


def test_cached_labels_skip_the_text_encoder(server: str) -> None:
    labels = [f"label number {i}" for i in range(1000)]
    body = {"images": [base64.b64encode(images(1)[0]).decode()], "labels": labels}
    first = httpx.post(f"{server}/v1/classify", json=body, timeout=120)
    assert first.status_code == 200
    misses = metric(server, "lit_text_cache_misses_total")
    hits = metric(server, "lit_text_cache_hits_total")
    second = httpx.post(f"{server}/v1/classify", json=body, timeout=120)
    assert second.status_code == 200
    assert metric(server, "lit_text_cache_misses_total") == misses
    assert metric(server, "lit_text_cache_hits_total") == hits + 1000
    assert second.json()["results"] == first.json()["results"]
    print(f"\n1,000 labels: first {first.elapsed.total_seconds() * 1000:.0f} ms, "
          f"cached {second.elapsed.total_seconds() * 1000:.0f} ms")  # fmt: skip


def test_concurrent_clients_are_batched_and_get_their_own_results(server: str) -> None:
    blobs = [encode(WORLD.sample("eval", 1000 + i)[0]) for i in range(32)]
    expected = Reference().scores(blobs, LABELS, None).argmax(axis=1)
    bodies = [{"images": [base64.b64encode(blob).decode()], "labels": LABELS} for blob in blobs]

    async def clients() -> list[int]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=server, timeout=60, limits=limits) as client:
            responses = await asyncio.gather(*(client.post("/v1/classify", json=body) for body in bodies))
        assert all(r.status_code == 200 for r in responses)
        return [LABELS.index(r.json()["results"][0]["predictions"][0]["label"]) for r in responses]

    before_sum = metric(server, 'lit_batch_size_sum{model="lit_demo",encoder="image"}')
    before_count = metric(server, 'lit_batch_size_count{model="lit_demo",encoder="image"}')
    assert asyncio.run(clients()) == list(expected)
    images_run = metric(server, 'lit_batch_size_sum{model="lit_demo",encoder="image"}') - before_sum
    batches = metric(server, 'lit_batch_size_count{model="lit_demo",encoder="image"}') - before_count
    assert images_run == 32
    assert images_run / batches > 4, f"mean batch {images_run / batches:.1f}"


def test_label_sets_survive_a_restart(tmp_path: Path) -> None:
    with running_gateway(tmp_path) as url:
        put = httpx.put(f"{url}/v1/label-sets/shapes", json={"labels": LABELS}, timeout=60)
        assert put.status_code == 200, put.text
    with running_gateway(tmp_path) as url:
        got = httpx.get(f"{url}/v1/label-sets/shapes")
        assert got.status_code == 200 and got.json()["labels"] == LABELS
        assert [s["name"] for s in httpx.get(f"{url}/v1/label-sets").json()] == ["shapes"]
        body = {"images": [base64.b64encode(images(1)[0]).decode()], "label_set": "shapes"}
        assert httpx.post(f"{url}/v1/classify", json=body, timeout=60).status_code == 200
        assert httpx.delete(f"{url}/v1/label-sets/shapes").status_code == 204
        assert httpx.get(f"{url}/v1/label-sets/shapes").status_code == 404


def test_health_models_and_docs(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    info = httpx.get(f"{server}/v1/models").json()
    assert (
        info["name"] == "lit_demo"
        and info["image_size"] == 64
        and "CPUExecutionProvider" in info["providers"]
    )
    assert httpx.get(f"{server}/docs").status_code == 200
    spec = httpx.get(f"{server}/openapi.json").json()
    assert "/v1/classify" in spec["paths"]
    assert httpx.get(f"{server}/v1/models").headers["x-request-id"]


def test_service_imports_no_torch() -> None:
    code = (
        "import sys, service.app, service.cli\n"
        "loaded = [m for m in sys.modules if m.startswith(('torch', 'training'))]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_concurrent_puts_of_one_label_set_leave_one_complete_set(server: str) -> None:
    versions = [[f"writer {w} label {i}" for i in range(200)] for w in range(8)]

    async def writers() -> list[int]:
        async with httpx.AsyncClient(base_url=server, timeout=120) as client:
            responses = await asyncio.gather(
                *(client.put("/v1/label-sets/contested", json={"labels": labels}) for labels in versions)
            )
        return [r.status_code for r in responses]

    assert asyncio.run(writers()) == [200] * 8
    stored = httpx.get(f"{server}/v1/label-sets/contested").json()["labels"]
    assert stored in versions  # exactly one writer's list, whole, never a mix
    body = {"images": [base64.b64encode(images(1)[0]).decode()], "label_set": "contested", "top_k": 3}
    top = httpx.post(f"{server}/v1/classify", json=body, timeout=60).json()["results"][0]["predictions"]
    assert len(top) == 3 and all(p["label"] in stored for p in top)


def test_a_missing_provider_stops_the_gateway_with_a_clear_error(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="cuda was requested"),
        running_gateway(tmp_path, LIT_PROVIDERS='["cuda"]'),
    ):
        pass


REQUIRED_METRICS = [
    "lit_requests_total", "lit_request_duration_seconds_bucket", "lit_images_total", "lit_batch_size_bucket",
    "lit_queue_depth", "lit_inference_duration_seconds_bucket", "lit_preprocess_duration_seconds_bucket",
    "lit_text_cache_hits_total", "lit_text_cache_misses_total", "lit_text_cache_entries", "lit_model_info",
    "lit_backend_errors_total",
]  # fmt: skip


def test_metrics_and_json_request_logs(tmp_path: Path) -> None:
    with running_gateway(tmp_path, LIT_LOG_FORMAT="json") as url:
        body = {"images": [base64.b64encode(images(1)[0]).decode()], "labels": LABELS}
        response = httpx.post(f"{url}/v1/classify", json=body, headers={"X-Request-ID": "abc123"}, timeout=60)
        assert response.status_code == 200 and response.headers["x-request-id"] == "abc123"
        text = httpx.get(f"{url}/metrics").text
        for name in REQUIRED_METRICS:
            assert re.search(rf"^{name}", text, re.MULTILINE), name
        assert 'lit_model_info{backend="onnxruntime",name="lit_demo",version="1"} 1.0' in text
        assert 'lit_requests_total{route="/v1/classify",status="200"} 1.0' in text
    log_text = "\n".join(p.read_text() for p in tmp_path.glob("gateway-*.log"))
    lines = [
        json.loads(line[line.index("{") :])
        for line in log_text.splitlines()
        if '"request_id": "abc123"' in line
    ]
    assert lines and lines[0]["path"] == "/v1/classify" and lines[0]["status"] == 200
    assert "providers" in log_text and "CPUExecutionProvider" in log_text  # the provider choice is logged
