"""The bad-input table for the Open Inference Protocol (KServe v2) routes: hostile and broken inference
requests, each with the status and error code the gateway answers.

Decisions: a body that is not the protocol's JSON (broken JSON, wrong JSON types, unknown fields) is our
usual 422 ``invalid_body``; a well-formed request that does not fit the model (datatypes, shapes against the
data, missing, unknown or repeated inputs, unknown outputs, unsupported extensions) is 400
``invalid_inference_request``; binary framing that does not add up (``Inference-Header-Content-Length``,
``binary_data_size``, BYTES length prefixes) is 400 ``invalid_binary_data``. Declared sizes are only ever
compared with the bytes that came, so a huge or negative one is a 400 like any other. Images, labels and
limits give the same codes as on /v1. Unknown models and versions are 404 ``unknown_model``.

Error bodies on /v2 are the protocol's ``{"error": "<message>"}``: the code is not in the body
(:func:`assert_kserve_error` checks the shape); the codes here are what the route raised.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import httpx

from tests.bad_input_cases import Case, case
from tests.bad_input_images import good_png, truncated
from tests.bad_input_requests import Build, b64, json_body, raw

INFER = "/v2/models/lit_demo/infer"
EMBED = "/v2/models/lit_demo.embed/infer"
JSON_CT = "application/json"
LABELS = ["red circle", "blue square", "green star"]
REQUEST, BINARY = "invalid_inference_request", "invalid_binary_data"


def tensor(name: str, data: list[Any], datatype: str = "BYTES", shape: list[int] | None = None) -> dict:
    return {
        "name": name,
        "shape": [len(data)] if shape is None else shape,
        "datatype": datatype,
        "data": data,
    }


def images_tensor(*blobs: bytes) -> dict:
    return tensor("images", [b64(blob) for blob in blobs or (good_png(),)])


def infer(*inputs: dict, **fields: Any) -> Build:
    """A JSON inference request of ``inputs`` (default: one good image and three labels)."""
    return json_body({"inputs": list(inputs) or [images_tensor(), tensor("labels", LABELS)], **fields})


def elements(*values: bytes) -> bytes:
    """BYTES binary data as tritonclient serialises it."""
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def framed(inputs: list[dict], binary: bytes, length: str | None = "auto", **fields: Any) -> Build:
    """A binary-extension request: the JSON header, then ``binary``; ``length`` overrides the header's
    length (None: no Inference-Header-Content-Length at all)."""
    head = json.dumps({"inputs": inputs, **fields}).encode()
    headers = {"content-type": "application/octet-stream"}
    if length is not None:
        headers["Inference-Header-Content-Length"] = str(len(head)) if length == "auto" else length
    return lambda: {"content": head + binary, "headers": headers}


def sized(name: str, count: int, size: int) -> dict:
    return {"name": name, "shape": [count], "datatype": "BYTES", "parameters": {"binary_data_size": size}}


def binary_labels(*values: bytes) -> tuple[list[dict], bytes]:
    data = elements(*values)
    return [images_tensor(), sized("labels", len(values), len(data))], data


def assert_kserve_error(response: httpx.Response) -> None:
    """The protocol's error body: one ``error`` string that says what to fix."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and len(body["error"]) > 10, body


def scores_shape(images: int, labels: int) -> Any:
    def check(response: httpx.Response) -> None:
        [output] = response.json()["outputs"]
        assert output["name"] == "scores" and output["shape"] == [images, labels], output

    return check


def binary_scores(images: int, labels: int) -> Any:
    def check(response: httpx.Response) -> None:
        assert response.headers["content-type"] == "application/octet-stream", response.headers
        length = int(response.headers["inference-header-content-length"])
        [output] = json.loads(response.content[:length])["outputs"]
        assert output["shape"] == [images, labels], output
        assert (
            output["parameters"]["binary_data_size"] == len(response.content) - length == 4 * images * labels
        )

    return check


def request_cases() -> list[Case]:
    """The JSON and the tensors in it."""
    png, labels = good_png(), tensor("labels", LABELS)
    return [
        case("kserve-ok-json", "json", infer(), 200, None, "", scores_shape(1, 3), INFER),
        case("kserve-json-broken", "raw", raw(b'{"inputs": [', JSON_CT), 422, "invalid_body", path=INFER),
        case("kserve-json-array", "raw", raw(b"[]", JSON_CT), 422, "invalid_body", path=INFER),
        case("kserve-inputs-not-list", "json", json_body({"inputs": "x"}), 422, "invalid_body", path=INFER),
        case("kserve-unknown-field", "json", infer(model="lit_demo"), 422, "invalid_body", path=INFER),
        case(
            "kserve-images-fp32", "json", infer(tensor("images", [0.5], "FP32"), tensor("labels", LABELS)),
            400, REQUEST, "images are BYTES (encoded files)", path=INFER,
        ),
        case(
            "kserve-labels-int64", "json", infer(images_tensor(), tensor("labels", [1, 2], "INT64")),
            400, REQUEST, path=INFER,
        ),
        case(
            "kserve-datatype-unknown", "json", infer(images_tensor(), tensor("labels", LABELS, "STRING")),
            400, REQUEST, "not a datatype of the protocol", path=INFER,
        ),
        case(
            "kserve-shape-more-than-data", "json",
            infer(images_tensor(), tensor("labels", LABELS, shape=[4])), 400, REQUEST, path=INFER,
        ),
        case(
            "kserve-shape-rank-2", "json", infer(images_tensor(), tensor("labels", LABELS, shape=[3, 1])),
            400, REQUEST, "every input is [N]", path=INFER,
        ),
        case(
            "kserve-shape-negative", "json", infer(images_tensor(), tensor("labels", LABELS, shape=[-3])),
            400, REQUEST, "-1 is for metadata, never a request", path=INFER,
        ),
        case(
            "kserve-element-not-string", "json", infer(images_tensor(), tensor("labels", ["cat", 7])),
            400, REQUEST, path=INFER,
        ),
        case("kserve-missing-images", "json", infer(tensor("labels", LABELS)), 400, REQUEST, path=INFER),
        case(
            "kserve-unknown-input", "json", infer(images_tensor(), labels, tensor("pixels", ["a"])),
            400, REQUEST, path=INFER,
        ),
        case(
            "kserve-input-twice", "json", infer(images_tensor(), tensor("labels", LABELS), images_tensor()),
            400, REQUEST, path=INFER,
        ),
        case(
            "kserve-unknown-output", "json",
            infer(images_tensor(), tensor("labels", LABELS), outputs=[{"name": "logits"}]),
            400, REQUEST, path=INFER,
        ),
        case(
            "kserve-shared-memory", "json",
            infer({**tensor("labels", LABELS), "parameters": {"shared_memory_region": "r"}}, images_tensor()),
            400, REQUEST, "no shared memory over the network", path=INFER,
        ),
        case(
            "kserve-label-set-not-string", "json", infer(images_tensor(), parameters={"label_set": 3}),
            400, REQUEST, path=INFER,
        ),
        case(
            "kserve-labels-and-label-set", "json",
            infer(images_tensor(), tensor("labels", LABELS), parameters={"label_set": "pets"}),
            400, "labels_required", path=INFER,
        ),
        case(
            "kserve-images-empty", "json", infer(tensor("images", []), tensor("labels", LABELS)),
            400, "no_images", path=INFER,
        ),
        case(
            "kserve-labels-empty", "json", infer(images_tensor(), tensor("labels", [])),
            400, "empty_labels", path=INFER,
        ),
        case(
            "kserve-image-truncated", "json", infer(images_tensor(truncated(png, 0.5)), labels),
            400, "undecodable_image", path=INFER,
        ),
        case(
            "kserve-image-is-text", "json", infer(images_tensor(b"hello world"), tensor("labels", LABELS)),
            415, "unsupported_image_format", path=INFER,
        ),
        case(
            "kserve-image-not-base64", "json",
            infer(tensor("images", ["%%% not base64"]), tensor("labels", LABELS)),
            400, "invalid_base64", "JSON cannot carry raw bytes: images are base64", path=INFER,
        ),
        case(
            "kserve-embed-texts-empty", "json", infer(tensor("texts", [])), 400, "no_texts", path=EMBED,
        ),
    ]  # fmt: skip


def binary_cases() -> list[Case]:
    """The binary tensor data extension's framing."""
    png = good_png()
    inputs, data = binary_labels(*(label.encode() for label in LABELS))
    five = [images_tensor(), sized("labels", 5, len(data))]
    image_data = elements(truncated(png, 0.5))
    return [
        case(
            "kserve-ok-binary", "raw", framed(inputs, data, parameters={"binary_data_output": True}), 200,
            None, "", binary_scores(1, 3), INFER,
        ),
        case(
            "kserve-header-length-past-body", "raw", framed(inputs, data, "9999999"), 400, BINARY, path=INFER,
        ),
        case("kserve-header-length-word", "raw", framed(inputs, data, "ten"), 400, BINARY, path=INFER),
        case("kserve-header-length-negative", "raw", framed(inputs, data, "-5"), 400, BINARY, path=INFER),
        case(
            "kserve-header-length-too-short", "raw", framed(inputs, data, "10"), 422, "invalid_body",
            "the JSON header is cut: not JSON", path=INFER,
        ),
        case(
            "kserve-binary-without-header", "raw", framed(inputs, data, None), 400, BINARY, path=INFER,
        ),
        case(
            "kserve-binary-size-negative", "raw", framed([images_tensor(), sized("labels", 3, -1)], data),
            400, BINARY, path=INFER,
        ),
        case(
            "kserve-binary-size-huge", "raw", framed([images_tensor(), sized("labels", 3, 10**15)], data),
            400, BINARY, "compared with the body, never allocated", path=INFER,
        ),
        case(
            "kserve-binary-bytes-left-over", "raw", framed(inputs, data + b"extra"), 400, BINARY, path=INFER,
        ),
        case(
            "kserve-binary-element-past-end", "raw",
            framed([images_tensor(), sized("labels", 1, 8)], struct.pack("<I", 2**32 - 1) + b"abcd"),
            400, BINARY, "a 4 GiB length prefix", path=INFER,
        ),
        case(
            "kserve-binary-fewer-elements", "raw", framed(five, data),
            400, BINARY, path=INFER,
        ),
        case(
            "kserve-labels-not-utf8", "raw", framed(*binary_labels(b"cat", b"\xff\xfe")), 400, REQUEST,
            path=INFER,
        ),
        case(
            "kserve-binary-image-undecodable", "raw",
            framed([sized("images", 1, len(image_data)), tensor("labels", LABELS)], image_data),
            400, "undecodable_image", path=INFER,
        ),
    ]  # fmt: skip


def route_cases() -> list[Case]:
    """Models, versions, encodings and limits."""
    return [
        case("kserve-unknown-model", "json", infer(), 404, "unknown_model", path="/v2/models/nope/infer"),
        case(
            "kserve-model-with-dot", "json", infer(), 404, "unknown_model", "only NAME and NAME.embed",
            path="/v2/models/lit_demo.text/infer",
        ),
        case(
            "kserve-wrong-version", "json", infer(), 404, "unknown_model", "names the served version",
            path="/v2/models/lit_demo/versions/9/infer",
        ),
        case(
            "kserve-gzip-body", "raw",
            lambda: {"content": b"\x1f\x8b", "headers": {"content-encoding": "gzip"}},
            415, "unsupported_media_type", path=INFER,
        ),
        case(
            "kserve-21mb-body", "raw", raw(lambda: b'{"inputs": ["' + b"A" * (21 << 20) + b'"]}', JSON_CT),
            413, "body_too_large", path=INFER,
        ),
        case(
            "kserve-65-images", "json", infer(images_tensor(*[good_png()] * 65), tensor("labels", LABELS)),
            413, "too_many_images", path=INFER,
        ),
        case("kserve-method-not-allowed", "raw", dict, 405, "method_not_allowed", path=INFER, method="GET"),
    ]  # fmt: skip


def kserve_cases() -> list[Case]:
    cases = request_cases() + binary_cases() + route_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases
