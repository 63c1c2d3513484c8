"""The Open Inference Protocol tensor codec (service/kserve_tensors.py) against tritonclient's own
serialisation: what ``tritonclient.http`` writes reads back element for element, what we write its
``InferResult`` parses, and every way the framing can be wrong is a 400 that says so.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.http._utils import _get_inference_request
from tritonclient.utils import serialize_byte_tensor

from service.errors import ApiError
from service.kserve import write_response
from service.kserve_schemas import TensorSpec
from service.kserve_tensors import read_request, split_bytes

INPUTS = tuple(TensorSpec(name, "BYTES", (-1,)) for name in ("images", "labels"))
OUTPUTS = (TensorSpec("scores", "FP32", (-1, -1)),)


def client_body(inputs: list[triton.InferInput], **kwargs: Any) -> tuple[bytes, str | None]:
    """The body and ``Inference-Header-Content-Length`` tritonclient.http would send."""
    body, json_size = _get_inference_request(
        inputs=inputs, request_id="", outputs=None, sequence_id=0, sequence_start=False,
        sequence_end=False, priority=0, timeout=None, custom_parameters=None, **kwargs,
    )  # fmt: skip
    return body, None if json_size is None else str(json_size)


def bytes_input(name: str, values: list[bytes], binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=np.object_), binary_data=binary)
    return tensor


def refusal(body: bytes, header: str | None = None) -> ApiError:
    with pytest.raises(ApiError) as caught:
        read_request(body, header, INPUTS, OUTPUTS)
    return caught.value


@settings(max_examples=60, deadline=None, database=None)
@given(
    images=st.lists(st.binary(max_size=40), max_size=6),
    labels=st.lists(st.text(max_size=12), min_size=1, max_size=6),
    binary_labels=st.booleans(),
)
def test_what_tritonclient_sends_reads_back(
    images: list[bytes], labels: list[str], binary_labels: bool
) -> None:
    encoded: list[Any] = [s.encode() for s in labels] if binary_labels else labels
    inputs = [bytes_input("images", images), bytes_input("labels", encoded, binary_labels)]
    body, header = client_body(inputs)
    request = read_request(body, header, INPUTS, OUTPUTS)
    assert request.inputs["images"].images() == images
    assert request.inputs["labels"].texts() == labels
    assert request.outputs == {"scores": True}  # no outputs named: tritonclient asks for binary


def test_bytes_elements_split_like_tritonclient_serialises() -> None:
    values = [b"", b"\x00\x01", "ünï".encode(), b"x" * 300]
    blob = serialize_byte_tensor(np.array(values, dtype=np.object_)).item()
    assert split_bytes(blob, "labels", len(values)) == values


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_parses_what_we_write(binary: bool) -> None:
    scores = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    body, media_type, headers = write_response(
        {"model_name": "lit_demo", "model_version": "1", "id": "r"}, {"scores": (scores, binary)}
    )
    length = headers.get("Inference-Header-Content-Length")
    assert (length is not None) is binary
    assert media_type == ("application/octet-stream" if binary else "application/json")
    result = triton.InferResult.from_response_body(
        body, header_length=None if length is None else int(length)
    )
    np.testing.assert_array_equal(result.as_numpy("scores"), scores)
    assert result.get_response()["id"] == "r"


def header_and(inputs: list[dict[str, Any]], binary: bytes = b"") -> tuple[bytes, str]:
    head = json.dumps({"inputs": inputs}).encode()
    return head + binary, str(len(head))


IMAGE = {"name": "images", "shape": [1], "datatype": "BYTES"}
BIN, REQ = "invalid_binary_data", "invalid_inference_request"
ONE = b"\x01\x00\x00\x00a"  # one BYTES element, b"a"


def sized(size: int, **more: Any) -> list[dict[str, Any]]:
    return [{**IMAGE, "parameters": {"binary_data_size": size}, **more}]


@pytest.mark.parametrize(
    ("inputs", "binary", "header", "code", "text"),
    [
        (sized(9), ONE, None, BIN, "declares 9 bytes"),
        (sized(5), ONE + b"++", None, BIN, "belong to no input"),
        (sized(-1), b"", None, BIN, ">= 0"),
        (sized(5), b"\x09\x00\x00\x00a", None, BIN, "declares 9 bytes but only 1"),
        (sized(2), b"\x01\x00", None, BIN, "4-byte length"),
        (sized(10), ONE + b"\x01\x00\x00\x00b", None, BIN, "exactly the 1 elements"),
        (sized(5, data=["a"]), ONE, None, REQ, "both data and binary_data_size"),
        ([IMAGE], b"", "12x", BIN, "non-negative integer"),
        ([IMAGE], b"", "-3", BIN, "non-negative integer"),
        ([IMAGE], b"", "100000", BIN, "the body has"),
        ([{**IMAGE, "data": [["a"], ["b"]]}], b"", None, REQ, "shape [1] says 1"),
        ([{**IMAGE, "shape": [2], "data": ["a"]}], b"", None, REQ, "shape [2] says 2"),
        ([{**IMAGE, "data": [1]}], b"", None, REQ, "not a string"),
        ([{**IMAGE, "data": ["a"]}, {**IMAGE, "data": ["b"]}], b"", None, REQ, "twice"),
        ([{**IMAGE, "name": "pixels", "data": ["a"]}], b"", None, REQ, "unknown input"),
    ],
)
def test_broken_framing_is_a_400(
    inputs: list[dict[str, Any]], binary: bytes, header: str | None, code: str, text: str
) -> None:
    body, length = header_and(inputs, binary)
    error = refusal(body, header or length)
    assert (error.status, error.code) == (400, code) and text in error.message, error


def test_binary_data_without_the_header_is_refused() -> None:
    body, _ = header_and([{**IMAGE, "parameters": {"binary_data_size": 0}}])
    assert "no Inference-Header-Content-Length" in refusal(body).message


def test_nested_json_data_is_row_major() -> None:
    body = json.dumps({"inputs": [{**IMAGE, "shape": [3], "data": [["a", ["b"]], "c"]}]}).encode()
    assert read_request(body, None, INPUTS, OUTPUTS).inputs["images"].elements == ["a", "b", "c"]


def test_a_json_body_that_is_no_request_is_our_422() -> None:
    for body in [b"{oops", b'{"inputs": "images"}', b'{"inputs": [], "extra": 1}', b"\xff"]:
        assert refusal(body).code == "invalid_body"


@pytest.mark.parametrize(
    ("fields", "wanted"),
    [
        ({}, {"scores": False}),
        ({"outputs": []}, {"scores": False}),  # none named: all of them
        ({"parameters": {"binary_data_output": True}}, {"scores": True}),
        ({"outputs": [{"name": "scores", "parameters": {"binary_data": True}}]}, {"scores": True}),
        (  # an output's own choice beats the request's
            {
                "parameters": {"binary_data_output": True},
                "outputs": [{"name": "scores", "parameters": {"binary_data": False}}],
            },
            {"scores": False},
        ),
    ],
)
def test_outputs_come_back_binary_when_asked(fields: dict[str, Any], wanted: dict[str, bool]) -> None:
    body = json.dumps({"inputs": [], **fields}).encode()
    assert read_request(body, None, INPUTS, OUTPUTS).outputs == wanted
