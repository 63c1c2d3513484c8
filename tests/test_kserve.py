"""The Open Inference Protocol (KServe v2) routes, driven by ``tritonclient.http`` itself.

A real uvicorn gateway serves the committed demo model as two protocol models, ``lit_demo`` (zero-shot
classification) and ``lit_demo.embed`` (embeddings). The client's health, metadata and inference calls must
work as against Triton; its scores must equal ``/v1/classify``'s and its embeddings ``/v1/embed/*``'s, with
JSON and binary tensors both ways. Mistakes come back as ``InferenceServerException`` with our message and
status; with ``LIT_API_KEYS`` set the client needs the key, and the health probes stay open.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from harness.gateway import running_gateway
from harness.images import LABELS
from tests.samples import as_matrix, images

KEY = "kserve-test-key-5Rb8"
TEMPLATES = ["a picture of a {}.", "art showing a {}."]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("kserve")) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(url=server.removeprefix("http://"), network_timeout=60) as c:
        yield c


def bytes_input(name: str, values: list[bytes] | list[str], binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=np.object_), binary_data=binary)
    return tensor


def classify_inputs(blobs: list[bytes], labels: list[str], binary: bool = True) -> list[triton.InferInput]:
    if binary:
        return [bytes_input("images", blobs), bytes_input("labels", [s.encode() for s in labels])]
    encoded = [base64.b64encode(b).decode() for b in blobs]  # JSON carries images as base64 strings
    return [bytes_input("images", encoded, False), bytes_input("labels", labels, False)]


def v1_scores(server: str, blobs: list[bytes], labels: list[str], **extra: Any) -> np.ndarray:
    body = {"images": [base64.b64encode(b).decode() for b in blobs], "labels": labels, **extra}
    response = httpx.post(f"{server}/v1/classify", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return as_matrix(response.json(), labels)


def v1_embeddings(server: str, path: str, body: dict[str, Any]) -> np.ndarray:
    response = httpx.post(f"{server}/v1/embed/{path}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return np.array(response.json()["embeddings"], dtype=np.float32)


def refused(status: int, call: Any, *args: Any, **kwargs: Any) -> str:
    """The message of the ``InferenceServerException`` that ``call`` must raise with ``status``."""
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    assert caught.value.status() == str(status), caught.value
    message = caught.value.message()
    assert message and not message.startswith("an exception occurred in the client"), message
    return message


# --- health and metadata --------------------------------------------------------------------------------


def test_health_and_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    for name in ("lit_demo", "lit_demo.embed"):
        assert client.is_model_ready(name)
        assert client.is_model_ready(name, "1")
        assert not client.is_model_ready(name, "2")
    assert not client.is_model_ready("no_such_model")


def test_server_metadata(client: triton.InferenceServerClient) -> None:
    meta = client.get_server_metadata()
    assert meta["name"] == "lit-zeroshot" and meta["version"]
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_of_both_kinds(client: triton.InferenceServerClient) -> None:
    classify = client.get_model_metadata("lit_demo")
    assert classify["name"] == "lit_demo" and classify["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in classify["inputs"]] == [
        ("images", "BYTES", [-1]),
        ("labels", "BYTES", [-1]),
        ("templates", "BYTES", [-1]),
    ]
    assert classify["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, -1]}]
    embed = client.get_model_metadata("lit_demo.embed", "1")
    assert embed["name"] == "lit_demo.embed" and embed["versions"] == ["1"]
    assert [t["name"] for t in embed["inputs"]] == ["images", "texts"]
    assert [(t["name"], t["shape"]) for t in embed["outputs"]] == [
        ("image_embeddings", [-1, 256]),
        ("text_embeddings", [-1, 256]),
    ]
    assert "serves version 1" in refused(404, client.get_model_metadata, "lit_demo", "3")
    message = refused(404, client.get_model_metadata, "lit_demo.text")
    assert "lit_demo, lit_demo.embed" in message  # names what is served


# --- classification --------------------------------------------------------------------------------------


def test_binary_scores_equal_classify(server: str, client: triton.InferenceServerClient) -> None:
    blobs = images(4)
    result = client.infer("lit_demo", classify_inputs(blobs, LABELS))  # no outputs named: all binary
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float32 and scores.shape == (4, len(LABELS))
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == scores.nbytes
    np.testing.assert_allclose(scores, v1_scores(server, blobs, LABELS), atol=1e-5)
    np.testing.assert_allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert result.get_response()["model_version"] == "1"


@pytest.mark.parametrize("binary_output", [True, False])
@pytest.mark.parametrize("binary_input", [True, False])
def test_json_and_binary_tensors_agree(
    server: str, client: triton.InferenceServerClient, binary_input: bool, binary_output: bool
) -> None:
    blobs, labels = images(2, offset=3), LABELS[:6]
    result = client.infer(
        "lit_demo",
        classify_inputs(blobs, labels, binary_input),
        outputs=[triton.InferRequestedOutput("scores", binary_data=binary_output)],
        request_id="req-7",
    )
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == "lit_demo"
    assert ("data" in response["outputs"][0]) is not binary_output
    np.testing.assert_allclose(result.as_numpy("scores"), v1_scores(server, blobs, labels), atol=1e-5)


def test_templates_input(server: str, client: triton.InferenceServerClient) -> None:
    blobs = images(2)
    inputs = [*classify_inputs(blobs, LABELS), bytes_input("templates", [t.encode() for t in TEMPLATES])]
    scores = client.infer("lit_demo", inputs).as_numpy("scores")
    np.testing.assert_allclose(scores, v1_scores(server, blobs, LABELS, templates=TEMPLATES), atol=1e-5)
    assert not np.allclose(scores, v1_scores(server, blobs, LABELS), atol=1e-4)  # the templates mattered


def test_label_set_parameter(server: str, client: triton.InferenceServerClient) -> None:
    put = httpx.put(f"{server}/v1/label-sets/kserve-shapes", json={"labels": LABELS[:5]}, timeout=60)
    assert put.status_code == 200, put.text
    blobs = images(3)
    result = client.infer(
        "lit_demo", [bytes_input("images", blobs)], parameters={"label_set": "kserve-shapes"}
    )
    expected = v1_scores(server, blobs, LABELS[:5])
    np.testing.assert_allclose(result.as_numpy("scores"), expected, atol=1e-5)
    message = refused(
        404, client.infer, "lit_demo", [bytes_input("images", blobs)], parameters={"label_set": "missing"}
    )
    assert "missing" in message


def test_repeated_labels_keep_one_column_each(server: str, client: triton.InferenceServerClient) -> None:
    """Labels are stripped and made unique before scoring, as on /v1; the output still has a column for
    every label sent, in the order sent."""
    blobs, labels = images(2), [LABELS[0], LABELS[1], f" {LABELS[0]} "]
    scores = client.infer("lit_demo", classify_inputs(blobs, labels)).as_numpy("scores")
    expected = v1_scores(server, blobs, LABELS[:2])
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(scores, expected[:, [0, 1, 0]], atol=1e-5)


def test_version_in_the_path(server: str, client: triton.InferenceServerClient) -> None:
    blobs = images(1)
    result = client.infer("lit_demo", classify_inputs(blobs, LABELS), model_version="1")
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_allclose(result.as_numpy("scores"), v1_scores(server, blobs, LABELS), atol=1e-5)
    message = refused(404, client.infer, "lit_demo", classify_inputs(blobs, LABELS), model_version="2")
    assert "no version '2'" in message and "serves version 1" in message


# --- embeddings ------------------------------------------------------------------------------------------


def test_embeddings_equal_v1(server: str, client: triton.InferenceServerClient) -> None:
    blobs, texts = images(3), ["a photo of a red circle.", "ünïcode tëxt", "a"]
    result = client.infer(
        "lit_demo.embed", [bytes_input("images", blobs), bytes_input("texts", [t.encode() for t in texts])]
    )
    image_embeddings, text_embeddings = (
        result.as_numpy("image_embeddings"),
        result.as_numpy("text_embeddings"),
    )
    encoded = [base64.b64encode(b).decode() for b in blobs]
    np.testing.assert_allclose(
        image_embeddings, v1_embeddings(server, "image", {"images": encoded}), atol=1e-6
    )
    np.testing.assert_allclose(text_embeddings, v1_embeddings(server, "text", {"texts": texts}), atol=1e-6)
    assert image_embeddings.shape == (3, 256) and text_embeddings.shape == (3, 256)


def test_embeddings_of_one_kind(server: str, client: triton.InferenceServerClient) -> None:
    texts = ["a cat", "a dog"]
    result = client.infer("lit_demo.embed", [bytes_input("texts", texts, binary=False)])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["text_embeddings"]
    np.testing.assert_allclose(
        result.as_numpy("text_embeddings"), v1_embeddings(server, "text", {"texts": texts}), atol=1e-6
    )
    wanted = [triton.InferRequestedOutput("image_embeddings")]
    message = refused(400, client.infer, "lit_demo.embed", [bytes_input("texts", texts)], outputs=wanted)
    assert "needs the input 'images'" in message


# --- errors ----------------------------------------------------------------------------------------------


def test_client_errors_carry_our_message_and_status(client: triton.InferenceServerClient) -> None:
    png = images(1)[0]
    labels = bytes_input("labels", [b"cat", b"dog"])
    cases: list[tuple[int, str, list[triton.InferInput], str]] = [
        (400, "lit_demo", [bytes_input("images", [png[: len(png) // 2]]), labels], "damaged"),
        (415, "lit_demo", [bytes_input("images", [b"not an image at all"]), labels], "not an image"),
        (404, "lit_demo.clip", [bytes_input("images", [png]), labels], "no model named 'lit_demo.clip'"),
        (
            400,
            "lit_demo",
            [bytes_input("images", [png]), bytes_input("texts", [b"x"])],
            "unknown input 'texts'",
        ),
        (400, "lit_demo", [labels], "missing input 'images'"),
        (400, "lit_demo", [bytes_input("images", [png]), bytes_input("labels", [b"\xff\xfe"])], "UTF-8"),
    ]
    floats = triton.InferInput("images", [2], "FP32")
    floats.set_data_from_numpy(np.zeros(2, np.float32))
    cases.append((400, "lit_demo", [floats, labels], "must be BYTES"))
    mismatched = bytes_input("images", [png, png])
    mismatched.set_shape([3])  # the shape says 3 elements; 2 were sent
    cases.append((400, "lit_demo", [mismatched, labels], "shape"))
    short = bytes_input("images", [png])
    short._raw_data = short._raw_data[:-10]  # binary_data_size still counts the 10 bytes
    cases.append((400, "lit_demo", [short, labels], "binary_data_size"))
    for status, model, inputs, text in cases:
        assert text in refused(status, client.infer, model, inputs), (status, model, text)


def test_unknown_and_unsupported_outputs(client: triton.InferenceServerClient) -> None:
    inputs = classify_inputs(images(1), LABELS[:3])
    assert "unknown output 'logits'" in refused(
        400, client.infer, "lit_demo", inputs, outputs=[triton.InferRequestedOutput("logits")]
    )
    assert "classification" in refused(
        400, client.infer, "lit_demo", inputs, outputs=[triton.InferRequestedOutput("scores", class_count=2)]
    )
    assert "uncompressed" in refused(
        415, client.infer, "lit_demo", inputs, request_compression_algorithm="gzip"
    )


# --- plain HTTP, as curl sends it --------------------------------------------------------------------------


def test_plain_json_and_hand_made_binary(server: str) -> None:
    png = images(1)[0]
    url = f"{server}/v2/models/lit_demo/infer"
    body = {
        "inputs": [
            {"name": "images", "shape": [1], "datatype": "BYTES", "data": [[base64.b64encode(png).decode()]]},
            {"name": "labels", "shape": [2], "datatype": "BYTES", "data": LABELS[:2]},
        ]
    }
    response = httpx.post(url, json=body, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    [output] = response.json()["outputs"]
    assert output["shape"] == [1, 2] and len(output["data"]) == 2
    np.testing.assert_allclose(output["data"], v1_scores(server, [png], LABELS[:2])[0], atol=1e-5)

    label_bytes = b"".join(len(s.encode()).to_bytes(4, "little") + s.encode() for s in LABELS[:2])
    header = json.dumps(
        {
            "inputs": [
                body["inputs"][0],
                {"name": "labels", "shape": [2], "datatype": "BYTES",
                 "parameters": {"binary_data_size": len(label_bytes)}},
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()  # fmt: skip
    binary = httpx.post(
        url,
        content=header + label_bytes,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "content-type": "application/octet-stream",
        },
        timeout=60,
    )
    assert binary.status_code == 200, binary.text
    assert binary.headers["content-type"] == "application/octet-stream"
    length = int(binary.headers["inference-header-content-length"])
    scores = np.frombuffer(binary.content[length:], "<f4")
    np.testing.assert_allclose(scores, output["data"], atol=1e-6)
    compressed = httpx.post(
        url, content=gzip.compress(json.dumps(body).encode()), headers={"content-encoding": "gzip"}
    )
    assert compressed.status_code == 415 and set(compressed.json()) == {"error"}


def test_routes_are_documented(server: str) -> None:
    spec = httpx.get(f"{server}/openapi.json", timeout=10).json()
    paths = {p: ops for p, ops in spec["paths"].items() if p.startswith("/v2")}
    assert set(paths) == {
        "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready",
        "/v2/models/{name}/versions/{version}", "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer",
    }  # fmt: skip
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert infer["tags"] == ["Open Inference Protocol"]
    content = infer["requestBody"]["content"]
    assert "$ref" not in json.dumps(content) and {"application/json", "application/octet-stream"} <= set(
        content
    )
    assert content["application/json"]["schema"]["properties"]["inputs"]["examples"]
    assert {"200", "400", "401", "404", "413", "415", "422", "503"} <= set(infer["responses"])
    error = infer["responses"]["400"]["content"]["application/json"]["schema"]
    assert (
        spec["components"]["schemas"][error["$ref"].rsplit("/", 1)[1]]["properties"]["error"]["type"]
        == "string"
    )


def test_no_model_yet(tmp_path: Path) -> None:
    """Live but not ready while the repository holds no model; the metadata routes say why."""
    empty = tmp_path / "empty_repository"
    empty.mkdir()
    with (
        running_gateway(tmp_path, ready_path="/healthz", LIT_REPOSITORY=str(empty)) as url,
        triton.InferenceServerClient(url=url.removeprefix("http://"), network_timeout=60) as client,
    ):
        assert client.is_server_live()
        assert not client.is_server_ready() and not client.is_model_ready("lit_demo")
        assert "no model bundles" in refused(503, client.get_model_metadata, "lit_demo")
        assert "no model bundles" in refused(503, client.infer, "lit_demo", classify_inputs(images(1), ["a"]))


# --- API keys ----------------------------------------------------------------------------------------------


def test_api_keys_apply(tmp_path: Path) -> None:
    with (
        running_gateway(tmp_path, LIT_API_KEYS=json.dumps([KEY])) as url,
        triton.InferenceServerClient(url=url.removeprefix("http://"), network_timeout=60) as client,
    ):
        auth = {"Authorization": f"Bearer {KEY}"}
        blobs = images(2)
        scores = client.infer("lit_demo", classify_inputs(blobs, LABELS), headers=auth).as_numpy("scores")
        assert scores.shape == (2, len(LABELS))
        assert client.get_model_metadata("lit_demo.embed", headers=auth)["versions"] == ["1"]
        assert client.is_model_ready("lit_demo", headers=auth)
        assert client.is_server_live() and client.is_server_ready()  # the probes stay open
        for headers in (None, {"Authorization": "Bearer wrong"}):
            message = refused(401, client.infer, "lit_demo", classify_inputs(blobs, LABELS), headers=headers)
            assert "Bearer" in message
            refused(401, client.get_server_metadata, headers=headers)
            assert not client.is_model_ready("lit_demo", headers=headers)
