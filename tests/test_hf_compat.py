"""The Hugging Face Inference-compatible route, driven by ``huggingface_hub.InferenceClient`` itself.

A real uvicorn gateway serves the committed demo model; the client is pointed at the route's URL (as its
``model``) and must get the same labels, in the same order, with the same scores as ``/v1/classify`` with
the same prompt template. Errors come back in the gateway's JSON error shape; with ``LIT_API_KEYS`` set,
``InferenceClient(api_key=key)`` works and a client without the key gets a 401.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import InferenceClient, constants
from huggingface_hub.errors import HfHubHTTPError

from harness.gateway import running_gateway
from harness.images import LABELS, WORLD, encode
from service.hf_compat import PATH
from tests.samples import images

TEMPLATE = "This is a photo of {}."
KEY = "hf-compat-test-key"


@pytest.fixture(autouse=True)
def client_may_reach_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest.py puts huggingface_hub in offline mode, which blocks every request its session makes, the
    gateway's on 127.0.0.1 included. The client never calls the Hub when its model is a URL."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("hf")) as url:
        yield url


def classify(url: str, image: bytes, labels: list[str], template: str | None, **headers: str) -> list[dict]:
    body = {"images": [base64.b64encode(image).decode()], "labels": labels}
    if template is not None:
        body["templates"] = [template]
    response = httpx.post(f"{url}/v1/classify", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["predictions"]


def assert_same_ranking(got: list, expected: list[dict]) -> None:
    assert [p.label for p in got] == [p["label"] for p in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert abs(mine.score - theirs["score"]) <= 1e-5, (mine, theirs)
    scores = [p.score for p in got]
    assert scores == sorted(scores, reverse=True)
    assert abs(sum(scores) - 1) < 1e-4  # softmax over the candidate labels


@pytest.mark.parametrize("template", [TEMPLATE, None])
def test_inference_client_ranks_like_classify(server: str, template: str | None) -> None:
    client = InferenceClient(model=f"{server}{PATH}", timeout=60)
    for image in images(3):
        got = client.zero_shot_image_classification(
            image, candidate_labels=LABELS, hypothesis_template=template
        )
        assert_same_ranking(got, classify(server, image, LABELS, template))


def test_inference_client_takes_a_path(server: str, tmp_path: Path) -> None:
    picture = WORLD.sample("eval", 3)[0]
    path = tmp_path / "picture.png"
    path.write_bytes(encode(picture))
    client = InferenceClient(model=f"{server}{PATH}", timeout=60)
    expected = classify(server, path.read_bytes(), LABELS[:4], TEMPLATE)
    for image in (path, str(path)):  # (for this task the client takes bytes, a path or a URL)
        got = client.zero_shot_image_classification(
            image, candidate_labels=LABELS[:4], hypothesis_template=TEMPLATE
        )
        assert_same_ranking(got, expected)


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return body["error"]["code"]


def test_client_errors_come_back_as_http_errors(server: str) -> None:
    client = InferenceClient(model=f"{server}{PATH}", timeout=60)
    png = images(1)[0]
    cases = [
        (b"this is not an image at all", {}, 415, "unsupported_image_format"),
        (png[: len(png) // 2], {}, 400, "undecodable_image"),  # a PNG cut short
        (png, {"hypothesis_template": "no placeholder"}, 422, "invalid_template"),
        (png, {"hypothesis_template": "{} and {}"}, 422, "invalid_template"),
    ]
    for image, extra, status, code in cases:
        with pytest.raises(HfHubHTTPError) as caught:
            client.zero_shot_image_classification(image, candidate_labels=LABELS[:3], **extra)
        response = caught.value.response
        assert response.status_code == status, response.text
        body = response.json()
        assert body["error"]["message"] and (code is None or body["error"]["code"] == code), body
        assert body["error"]["message"] in str(caught.value)  # the client shows the server's reason


def test_bad_bodies_get_the_gateway_error_shape(server: str) -> None:
    url = f"{server}{PATH}"
    image = base64.b64encode(images(1)[0]).decode()
    params = {"candidate_labels": LABELS[:3]}
    post = lambda body, **kw: httpx.post(url, json=body, timeout=60, **kw)  # noqa: E731
    assert error_of(post({"inputs": image}), 422) == "invalid_body"
    assert error_of(post({"parameters": params}), 422) == "invalid_body"
    assert error_of(post({"inputs": [image], "parameters": params}), 422) == "invalid_body"
    assert error_of(post({"inputs": image, "parameters": {**params, "top_k": 2}}), 422) == "invalid_body"
    assert error_of(post({"inputs": image, "parameters": {"candidate_labels": "a,b"}}), 422) == "invalid_body"
    assert error_of(post({"inputs": image, "parameters": {"candidate_labels": []}}), 400) == "empty_labels"
    assert error_of(post({"inputs": "%%% not base64", "parameters": params}), 400) == "invalid_base64"
    assert error_of(post({"inputs": "https://example.com/cat.jpg", "parameters": params}), 400) == (
        "invalid_base64"  # the server never fetches URLs
    )
    raw = httpx.post(url, content=images(1)[0], headers={"content-type": "image/png"}, timeout=60)
    assert error_of(raw, 415) == "unsupported_media_type"
    broken = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}, timeout=60)
    assert error_of(broken, 422) == "invalid_body"
    assert error_of(httpx.get(url, timeout=10), 405) == "method_not_allowed"
    # A data: URL is an image too, and the route answers a plain list as documented.
    data_url = {"inputs": f"data:image/png;base64,{image}", "parameters": params}
    answer = post(data_url)
    assert answer.status_code == 200 and [set(p) for p in answer.json()] == [{"label", "score"}] * 3


def test_route_is_documented(server: str) -> None:
    spec = httpx.get(f"{server}/openapi.json", timeout=10).json()
    operation = spec["paths"][PATH]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in json.dumps(schema)  # inlined: nothing points outside the document
    assert schema["properties"]["parameters"]["properties"]["candidate_labels"]["examples"]
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(operation["responses"])


def test_api_keys_apply(tmp_path: Path) -> None:
    with running_gateway(tmp_path, LIT_API_KEYS=json.dumps([KEY])) as url:
        image = images(1)[0]
        got = InferenceClient(model=f"{url}{PATH}", api_key=KEY, timeout=60).zero_shot_image_classification(
            image, candidate_labels=LABELS[:5], hypothesis_template=TEMPLATE
        )
        assert_same_ranking(got, classify(url, image, LABELS[:5], TEMPLATE, authorization=f"Bearer {KEY}"))
        for client in (
            InferenceClient(model=f"{url}{PATH}", timeout=60),
            InferenceClient(model=f"{url}{PATH}", api_key="wrong-key", timeout=60),
        ):
            with pytest.raises(HfHubHTTPError) as caught:
                client.zero_shot_image_classification(image, candidate_labels=LABELS[:5])
            assert error_of(caught.value.response, 401) == "unauthorized"
