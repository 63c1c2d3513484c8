"""Two bundles in one gateway: the committed demo (softmax) and a tiny sigmoid-loss one of another width.

Each answers, with and without ``model``, exactly what a gateway serving it alone answers; an unknown model
is a 404; promoting a version of one under load fails no request while the other keeps serving; and 32
clients spread over both get, every one, their own model's answer.
"""

from __future__ import annotations

import base64
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from harness.gateway import REPOSITORY, running_gateway
from harness.images import LABELS
from harness.metrics import metric
from harness.repositories import copy_bundle
from lit_bundle.repository import promote
from tests.helpers import TINY_IMAGE, tiny_config
from tests.samples import images
from training.config import ImageTowerConfig
from training.export import export_bundle
from training.export_checkpoint import request_from_checkpoint
from training.towers import build_image_tower
from training.train import train

TINY = "tiny_sigmoid"


def _tiny_checkpoint(root: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    tower = build_image_tower(ImageTowerConfig(**TINY_IMAGE), pretrained=False)
    weights = root / f"tower-{seed}.safetensors"
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(weights))
    cfg = tiny_config(root / f"run-{seed}", weights, "steps=3", "loss.kind=sigmoid")
    return train(cfg, progress=False).checkpoint


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo bundle plus ``tiny_sigmoid`` v1 (active) and v2 (published, not yet promoted)."""
    root = tmp_path_factory.mktemp("many")
    repo = root / "repo"
    shutil.copytree(REPOSITORY, repo)
    export_bundle(request_from_checkpoint(_tiny_checkpoint(root, 0), TINY, progress=False), repo)
    export_bundle(
        request_from_checkpoint(_tiny_checkpoint(root, 1), TINY, progress=False), repo, activate=False
    )
    return repo


@pytest.fixture(scope="module")
def promoted(repository: Path) -> Path:
    """A copy of the repository where tiny_sigmoid v2 is already active (its answers, served alone)."""
    copy = repository.parent / "promoted"
    shutil.copytree(repository, copy)
    promote(copy, TINY, 2)
    return copy


@pytest.fixture(scope="module")
def gateways(
    repository: Path, promoted: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Gateways serving both models, the demo alone, the tiny one alone (v1, and v2 from the copy)."""
    work = tmp_path_factory.mktemp("gateways")
    common = {"LIT_REPOSITORY": str(repository), "LIT_MODEL_POLL_S": "0.5"}
    for name in ("both", "demo", "tiny", "tiny2"):
        (work / name).mkdir()
    with (
        running_gateway(work / "both", **common, LIT_DEFAULT_MODEL="lit_demo") as both,
        running_gateway(work / "demo", **common, LIT_MODELS='["lit_demo"]') as demo,
        running_gateway(
            work / "tiny", **{**common, "LIT_MODEL_POLL_S": "0"}, LIT_MODELS=f'["{TINY}"]'
        ) as tiny,
        running_gateway(
            work / "tiny2", LIT_REPOSITORY=str(promoted), LIT_MODELS=f'["{TINY}"]', LIT_MODEL_POLL_S="0"
        ) as tiny2,
    ):
        yield {"both": both, "lit_demo": demo, TINY: tiny, "tiny_v2": tiny2}


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _scores(answer: dict) -> np.ndarray:
    return np.array(
        [[p["score"] for p in sorted(r["predictions"], key=lambda p: p["label"])] for r in answer["results"]]
    )


def _classify(url: str, model: str | None, blobs: list[bytes], **extra: object) -> httpx.Response:
    body = {"images": [_b64(b) for b in blobs], "labels": LABELS, **extra}
    if model is not None:
        body["model"] = model
    return httpx.post(f"{url}/v1/classify", json=body, timeout=60)


def test_models_are_listed_with_their_own_shapes(gateways: dict[str, str]) -> None:
    listed = httpx.get(f"{gateways['both']}/v1/models").json()
    assert listed["default"] == "lit_demo" and listed["name"] == "lit_demo"  # one-model clients read this
    by_name = {m["name"]: m for m in listed["models"]}
    assert set(by_name) == {"lit_demo", TINY}
    assert all(m["state"] == "ready" for m in by_name.values())
    assert by_name[TINY]["loss"] == "sigmoid" and by_name["lit_demo"]["loss"] == "softmax"
    assert by_name[TINY]["embed_dim"] != by_name["lit_demo"]["embed_dim"]
    assert httpx.get(f"{gateways['both']}/v1/models/{TINY}").json() == by_name[TINY]
    ready = httpx.get(f"{gateways['both']}/readyz").json()
    assert ready["models"] == {"lit_demo": "ready", TINY: "ready"}


@pytest.mark.parametrize("model", ["lit_demo", TINY])
def test_every_route_answers_as_the_model_alone(gateways: dict[str, str], model: str) -> None:
    both, alone = gateways["both"], gateways[model]
    blobs = images(3)
    named = [None, model] if model == "lit_demo" else [model]
    want = _classify(alone, None, blobs).json()
    for choice in named:
        got = _classify(both, choice, blobs).json()
        assert got["model"] == want["model"]
        np.testing.assert_allclose(_scores(got), _scores(want), atol=1e-5)
        files = [("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(blobs)]
        form: dict[str, object] = {"labels": LABELS, **({"model": choice} if choice else {})}
        multipart = httpx.post(f"{both}/v1/classify", files=files, data=form, timeout=60).json()
        np.testing.assert_allclose(_scores(multipart), _scores(want), atol=1e-5)
        for route, body in (
            ("/v1/embed/image", {"images": [_b64(blobs[0])]}),
            ("/v1/embed/text", {"texts": LABELS}),
        ):
            reference = np.array(httpx.post(f"{alone}{route}", json=body, timeout=60).json()["embeddings"])
            answer = httpx.post(
                f"{both}{route}", json={**body, **({"model": choice} if choice else {})}, timeout=60
            )
            np.testing.assert_allclose(np.array(answer.json()["embeddings"]), reference, atol=1e-5)
    hf = {"inputs": _b64(blobs[0]), "parameters": {"candidate_labels": LABELS}}
    want_hf = httpx.post(f"{alone}/v1/hf/zero-shot-image-classification", json=hf, timeout=60).json()
    got_hf = httpx.post(f"{both}/v1/hf/{model}/zero-shot-image-classification", json=hf, timeout=60).json()
    assert [p["label"] for p in got_hf] == [p["label"] for p in want_hf]
    np.testing.assert_allclose([p["score"] for p in got_hf], [p["score"] for p in want_hf], atol=1e-5)


def test_label_sets_are_shared_and_encoded_per_model(gateways: dict[str, str]) -> None:
    both = gateways["both"]
    assert httpx.put(f"{both}/v1/label-sets/shapes", json={"labels": LABELS}, timeout=60).status_code == 200
    blobs = images(2)
    for model in ("lit_demo", TINY):
        body = {"images": [_b64(b) for b in blobs], "label_set": "shapes", "model": model}
        by_set = httpx.post(f"{both}/v1/classify", json=body, timeout=60).json()
        by_labels = _classify(both, model, blobs).json()
        np.testing.assert_allclose(_scores(by_set), _scores(by_labels), atol=1e-6)


def test_an_unknown_model_is_404_everywhere(gateways: dict[str, str]) -> None:
    both = gateways["both"]
    calls = [
        httpx.get(f"{both}/v1/models/nope"),
        _classify(both, "nope", images(1)),
        httpx.post(f"{both}/v1/embed/text", json={"texts": ["a"], "model": "nope"}),
        httpx.post(
            f"{both}/v1/hf/nope/zero-shot-image-classification",
            json={"inputs": _b64(images(1)[0]), "parameters": {"candidate_labels": ["a"]}},
        ),
        httpx.put(f"{both}/v1/label-sets/x", json={"labels": ["a"], "model": "nope"}),
    ]
    for answer in calls:
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "unknown_model"
        assert "lit_demo" in answer.json()["error"]["message"]  # says what is served


def test_promotion_of_one_model_under_load_over_both(gateways: dict[str, str], repository: Path) -> None:
    """32 clients over both models for a few seconds while tiny_sigmoid v2 is promoted: no failure, and
    every answer equals its model and version's own answer (taken from the gateway serving it alone)."""
    both, blobs = gateways["both"], images(4)
    expected: dict[tuple[str, int], np.ndarray] = {}
    for alone in ("lit_demo", TINY, "tiny_v2"):
        answer = _classify(gateways[alone], None, blobs).json()
        expected[(answer["model"]["name"], answer["model"]["version"])] = _scores(answer)
    assert (TINY, 1) in expected and (TINY, 2) in expected
    failures: list[str] = []
    seen: dict[tuple[str, int], int] = {}
    stop = time.monotonic() + 8.0
    lock = threading.Lock()

    def client(index: int) -> None:
        model = "lit_demo" if index % 2 else TINY
        with httpx.Client(timeout=60) as session:
            while time.monotonic() < stop:
                body = {"images": [_b64(b) for b in blobs], "labels": LABELS, "model": model}
                answer = session.post(f"{both}/v1/classify", json=body)
                if answer.status_code != 200:
                    with lock:
                        failures.append(f"{model}: {answer.status_code} {answer.text[:200]}")
                    continue
                got = answer.json()
                key = (got["model"]["name"], got["model"]["version"])
                with lock:
                    seen[key] = seen.get(key, 0) + 1
                    if key[0] != model or not np.allclose(_scores(got), expected[key], atol=1e-5):
                        failures.append(f"{model}: wrong answer from {key}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    promote(repository, TINY, 2)  # the single-model gateways do not poll: they keep their versions
    for thread in threads:
        thread.join()
    assert not failures, failures[:5]
    assert set(seen) == set(expected), seen  # the demo throughout, and tiny_sigmoid before and after


def test_a_memory_budget_unloads_the_least_recently_used_and_reloads_on_demand(
    repository: Path, gateways: dict[str, str], tmp_path: Path
) -> None:
    """Three models, room for two: the default and one other load at start; a request for the third loads
    it and unloads the least recently used other; each answer is still its model's own."""
    repo = tmp_path / "repo"
    shutil.copytree(repository, repo)
    copy_bundle(repo, "lit_demo", "lit_other")
    blobs = images(2)
    demo = _scores(_classify(gateways["lit_demo"], None, blobs).json())
    want = {"lit_demo": demo, "lit_other": demo}  # lit_other is the demo's files renamed
    for alone in (TINY, "tiny_v2"):  # whichever version an earlier test left active
        answer = _classify(gateways[alone], None, blobs).json()
        want[f"{TINY}:{answer['model']['version']}"] = _scores(answer)
    # The default sorts last: it must still be the one loaded first and never unloaded.
    env = {"LIT_REPOSITORY": str(repo), "LIT_DEFAULT_MODEL": TINY, "LIT_MAX_LOADED_MODELS": "2"}
    with running_gateway(tmp_path, **env) as url:

        def states() -> dict[str, str]:
            return {m["name"]: m["state"] for m in httpx.get(f"{url}/v1/models").json()["models"]}

        assert states() == {TINY: "ready", "lit_demo": "ready", "lit_other": "unloaded"}
        for model, evicted in (("lit_other", "lit_demo"), ("lit_demo", "lit_other"), (TINY, None)):
            answer = _classify(url, model, blobs).json()
            assert answer["model"]["name"] == model
            key = model if model != TINY else f"{TINY}:{answer['model']['version']}"
            np.testing.assert_allclose(_scores(answer), want[key], atol=1e-5)
            now = states()
            assert now[model] == "ready" and now[TINY] == "ready"  # the default is never unloaded
            if evicted is not None:
                assert now[evicted] == "unloaded", now
            assert metric(url, "lit_models_loaded") == 2
        assert metric(url, 'lit_model_unloads_total{model="lit_demo"}') == 1
        assert metric(url, 'lit_model_unloads_total{model="lit_other"}') == 1


def test_a_model_that_fails_to_load_is_reported_and_retried_while_the_others_serve(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(REPOSITORY, repo)
    env = {"LIT_REPOSITORY": str(repo), "LIT_MODELS": '["lit_demo", "later"]', "LIT_MODEL_POLL_S": "0.3"}
    with running_gateway(tmp_path, **env) as url:
        listed = {m["name"]: m for m in httpx.get(f"{url}/v1/models").json()["models"]}
        assert listed["later"]["state"] == "failed" and "later" in listed["later"]["error"]
        assert listed["lit_demo"]["state"] == "ready"
        assert metric(url, 'lit_model_loads_total{model="later",outcome="refused"}') == 1
        assert _classify(url, None, images(1)).status_code == 200
        refused = _classify(url, "later", images(1))
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"
        copy_bundle(repo, "lit_demo", "later")  # the bundle arrives: the next poll loads it
        deadline = time.monotonic() + 20
        while _classify(url, "later", images(1)).status_code != 200:
            assert time.monotonic() < deadline, httpx.get(f"{url}/v1/models/later").json()
            time.sleep(0.2)
        assert httpx.get(f"{url}/readyz").json()["models"] == {"lit_demo": "ready", "later": "ready"}
