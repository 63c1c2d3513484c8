"""Hot model swap: a version promoted under load takes over without a failed request,
every answer comes from the version it names, label sets move to the new version, and damaged versions
are refused while the old one keeps serving. A real gateway process polls a copy of the committed
repository to which a second, differently trained (and differently sized) version is added."""

from __future__ import annotations

import asyncio
import base64
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from harness.gateway import REPOSITORY, running_gateway
from harness.images import LABELS
from harness.metrics import metric
from lit_bundle.manifest import manifest_path, read_manifest, sha256_file
from lit_bundle.repository import promote
from lit_bundle.triton import TritonOptions, encoder_config, write_config
from tests.helpers import TINY_IMAGE, tiny_config
from tests.samples import Reference, as_matrix, images
from training.config import ImageTowerConfig
from training.export import export_bundle
from training.export_checkpoint import request_from_checkpoint
from training.towers import build_image_tower
from training.train import train

NAME = "lit_demo"
CLIENTS = 32
IMAGES = images(8, offset=300)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed v1, plus versions 2-4 of a tiny model (32 px input where v1 takes 64 px), not active."""
    root = tmp_path_factory.mktemp("swap")
    repo = root / "repo"
    shutil.copytree(REPOSITORY, repo)
    torch.manual_seed(1)
    tower = build_image_tower(ImageTowerConfig(**TINY_IMAGE), pretrained=False)
    weights = root / "tower.safetensors"
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(weights))
    checkpoint = train(tiny_config(root, weights, "steps=3"), progress=False).checkpoint
    request = request_from_checkpoint(checkpoint, NAME, progress=False)
    for version in (2, 3, 4):
        assert export_bundle(request, repo, activate=False).version == version
    return repo


@pytest.fixture(scope="module")
def gateway(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    work = tmp_path_factory.mktemp("gw")
    with running_gateway(work, LIT_REPOSITORY=str(repository), LIT_MODEL_POLL_S="0.2") as url:
        put = httpx.put(f"{url}/v1/label-sets/shapes", json={"labels": LABELS}, timeout=60)
        assert put.status_code == 200, put.text
        log = next(work.glob("gateway-*.log"))
        yield url, log


@dataclass
class Answer:
    client: int
    image: int
    status: int
    version: int | None
    scores: np.ndarray | None
    finished: float


async def _client(
    http: httpx.AsyncClient, client: int, answers: list[Answer], stop: asyncio.Event, deadline: float
) -> None:
    sent = 0
    while not stop.is_set() and time.monotonic() < deadline:
        image = (client + sent) % len(IMAGES)
        sent += 1
        body = {"images": [base64.b64encode(IMAGES[image]).decode()], "label_set": "shapes"}
        response = await http.post("/v1/classify", json=body)
        ok = response.status_code == 200
        payload = response.json() if ok else None
        answers.append(
            Answer(
                client, image, response.status_code,
                payload["model"]["version"] if payload else None,
                as_matrix(payload, LABELS)[0] if payload else None,
                time.monotonic(),
            )
        )  # fmt: skip


async def _promote_under_load(url: str, repository: Path) -> tuple[list[Answer], float]:
    """32 closed-loop clients; version 2 is promoted after 1.5 s; load runs until v2 has answered for 2 s
    (at most 60 s in all). Returns the answers and when the promotion happened."""
    answers: list[Answer] = []
    stop = asyncio.Event()
    deadline = time.monotonic() + 60
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        clients = [asyncio.create_task(_client(http, c, answers, stop, deadline)) for c in range(CLIENTS)]
        await asyncio.sleep(1.5)
        promoted = time.monotonic()
        await asyncio.to_thread(promote, repository, NAME, 2)
        while time.monotonic() < deadline:
            first_v2 = min((a.finished for a in answers if a.version == 2), default=None)
            if first_v2 is not None and time.monotonic() - first_v2 > 2.0:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*clients)
    return answers, promoted


def _wait_for_log(log: Path, text: str, timeout_s: float = 20) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if text in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"no log line with {text!r} within {timeout_s} s:\n{log.read_text()[-2000:]}")


def _serving(url: str) -> int:
    return httpx.get(f"{url}/v1/models", timeout=10).json()["version"]


def _classify(url: str, image: int) -> dict:
    body = {"images": [base64.b64encode(IMAGES[image]).decode()], "label_set": "shapes"}
    response = httpx.post(f"{url}/v1/classify", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_promotion_under_load_loses_no_request(gateway: tuple[str, Path], repository: Path) -> None:
    url, log = gateway
    expected = {v: Reference(repository, v).scores(IMAGES, LABELS, None) for v in (1, 2)}
    assert np.abs(expected[1] - expected[2]).max() > 0.05  # the versions answer differently
    assert _serving(url) == 1
    misses_before = metric(url, "lit_text_cache_misses_total")

    answers, promoted = asyncio.run(_promote_under_load(url, repository))

    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {[a.status for a in failed][:10]}"
    by_version = {v: [a for a in answers if a.version == v] for v in (1, 2)}
    assert by_version[1] and by_version[2] and len(by_version[1]) + len(by_version[2]) == len(answers)
    for answer in answers:  # each answer was computed by the version it names, for its own image
        assert np.abs(answer.scores - expected[answer.version][answer.image]).max() <= 1e-5
    for client in range(CLIENTS):  # a client that has seen v2 never gets v1 again
        versions = [a.version for a in sorted(answers, key=lambda a: a.finished) if a.client == client]
        assert versions == sorted(versions)
    switched = min(a.finished for a in by_version[2]) - promoted
    print(f"\n{len(answers)} requests, {len(by_version[1])} by v1, {len(by_version[2])} by v2; "
          f"v2 answered {switched:.2f} s after the promotion")  # fmt: skip

    # The label set moved: encoded once for v2 before the switch, then every request hit the cache;
    # v1's entries were dropped once its last request had finished.
    assert metric(url, "lit_text_cache_misses_total") - misses_before == len(LABELS)
    deadline = time.monotonic() + 10
    while metric(url, "lit_text_cache_entries") != len(LABELS) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(url, "lit_text_cache_entries") == len(LABELS)
    metrics = httpx.get(f"{url}/metrics").text
    assert f'lit_model_info{{backend="onnxruntime",name="{NAME}",version="2"}} 1.0' in metrics
    assert 'version="1"' not in metrics
    assert metric(url, 'lit_model_loads_total{model="lit_demo",outcome="served"}') == 2
    assert _serving(url) == 2 and httpx.get(f"{url}/readyz").json()["model"]["version"] == 2
    _wait_for_log(log, "now serving lit_demo version 2")


@pytest.mark.parametrize("damage", ["checksum", "broken_onnx"])
def test_damaged_version_is_refused_and_the_old_one_keeps_serving(
    gateway: tuple[str, Path], repository: Path, damage: str
) -> None:
    url, log = gateway
    if _serving(url) != 2:
        pytest.fail("runs after test_promotion_under_load_loses_no_request (v2 serving)")
    version = {"checksum": 3, "broken_onnx": 4}[damage]
    manifest = read_manifest(manifest_path(repository, NAME, version))
    refused = metric(url, 'lit_model_loads_total{model="lit_demo",outcome="refused"}')
    if damage == "checksum":  # bytes changed on disk after the version was promoted
        text_model = repository / manifest.text_encoder.file
        text_model.write_bytes(text_model.read_bytes()[:-64] + bytes(64))
        for encoder in (manifest.image_encoder, manifest.text_encoder):
            write_config(
                repository / encoder.triton_name / "config.pbtxt",
                encoder_config(encoder, [version], TritonOptions()),
            )
        reason = "sha256"
    else:  # checksums match, but the image model is not ONNX at all
        image_model = repository / manifest.image_encoder.file
        image_model.write_bytes(b"this is not an ONNX model")
        files = {**manifest.files, manifest.image_encoder.file: sha256_file(image_model)}
        path = manifest_path(repository, NAME, version)
        path.write_text(manifest.model_copy(update={"files": files}).model_dump_json(indent=1))
        promote(repository, NAME, version)
        reason = "ONNX"
    line = _wait_for_log(log, f"refused lit_demo version {version}")
    assert reason.lower() in line.lower() and "still serving version 2" in line, line
    assert metric(url, 'lit_model_loads_total{model="lit_demo",outcome="refused"}') == refused + 1
    assert _serving(url) == 2 and httpx.get(f"{url}/readyz").status_code == 200
    expected = Reference(repository, 2).scores(IMAGES[:2], LABELS, None)
    for image in range(2):
        answer = _classify(url, image)
        assert answer["model"]["version"] == 2
        assert np.abs(as_matrix(answer, LABELS)[0] - expected[image]).max() <= 1e-5
    time.sleep(1.0)  # several polls later the refused version is not retried
    assert metric(url, 'lit_model_loads_total{model="lit_demo",outcome="refused"}') == refused + 1
