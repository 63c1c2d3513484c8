"""The Open Inference Protocol over gRPC (``LIT_GRPC_PORT``), driven by ``tritonclient.grpc`` itself.

A real gateway process serves the committed demo model on HTTP and on gRPC. The client's health, metadata
and inference calls must work as against Triton; its scores must equal ``/v1/classify``'s and its
embeddings ``/v1/embed/*``'s. Mistakes end the RPC with our message, the status code mapped from our HTTP
status, and our error code in the trailing metadata ``x-error-code``; with ``LIT_API_KEYS`` set every RPC but
the probes needs the key. Without ``LIT_GRPC_PORT`` the gateway opens no second port and imports no gRPC.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from harness.gateway import REPOSITORY, free_port, running_gateway
from harness.images import LABELS
from service.errors import STATUS
from service.kserve_grpc import STATUS_CODES, listen_address, status_code
from tests.samples import images
from tests.test_kserve import v1_embeddings, v1_scores

KEY = "grpc-test-key-9Tq2"
TEMPLATES = ["a picture of a {}.", "art showing a {}."]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """``http``: the base URL; ``grpc``: host:port of the gRPC server of the same process."""
    port = free_port()
    with running_gateway(tmp_path_factory.mktemp("grpc"), LIT_GRPC_PORT=str(port)) as url:
        yield SimpleNamespace(http=url, grpc=f"127.0.0.1:{port}", port=port)


@pytest.fixture(scope="module")
def client(gateway: SimpleNamespace) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(url=gateway.grpc) as c:
        yield c


@pytest.fixture(scope="module")
def stub(gateway: SimpleNamespace) -> Iterator[Any]:
    """The generated stub on a plain channel: for what tritonclient does not send or show."""
    with grpc.insecure_channel(gateway.grpc) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def bytes_input(name: str, values: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=np.object_))
    return tensor


def classify_inputs(blobs: list[bytes], labels: list[str]) -> list[triton.InferInput]:
    return [bytes_input("images", blobs), bytes_input("labels", [s.encode() for s in labels])]


def refused(code: str, call: Any, *args: Any, **kwargs: Any) -> str:
    """The message of the ``InferenceServerException`` that ``call`` must raise with status ``code``."""
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    assert caught.value.status() == f"StatusCode.{code}", caught.value
    message = caught.value.message()
    assert message, caught.value
    return message


def rpc_error(call: Any, request: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, **kwargs)
    return caught.value


def error_code(error: grpc.RpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get("x-error-code")  # type: ignore[attr-defined]


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
    assert meta.name == "lit-zeroshot" and meta.version
    assert list(meta.extensions) == ["binary_tensor_data", "parameters"]


def test_model_metadata_of_both_kinds(gateway: SimpleNamespace, client: triton.InferenceServerClient) -> None:
    for name, version in (("lit_demo", ""), ("lit_demo.embed", "1")):
        meta = client.get_model_metadata(name, version, as_json=True)
        over_http = httpx.get(f"{gateway.http}/v2/models/{name}", timeout=10).json()
        for side in ("inputs", "outputs"):  # protobuf's JSON writes int64 as strings
            for tensor in meta[side]:
                tensor["shape"] = [int(d) for d in tensor["shape"]]
        assert meta == over_http
    classify = client.get_model_metadata("lit_demo")
    assert [(t.name, t.datatype, list(t.shape)) for t in classify.inputs] == [
        ("images", "BYTES", [-1]),
        ("labels", "BYTES", [-1]),
        ("templates", "BYTES", [-1]),
    ]
    assert [(t.name, list(t.shape)) for t in client.get_model_metadata("lit_demo.embed").outputs] == [
        ("image_embeddings", [-1, 256]),
        ("text_embeddings", [-1, 256]),
    ]
    assert "serves version 1" in refused("NOT_FOUND", client.get_model_metadata, "lit_demo", "3")
    assert "lit_demo, lit_demo.embed" in refused("NOT_FOUND", client.get_model_metadata, "lit_demo.text")


def test_other_rpcs_are_unimplemented(client: triton.InferenceServerClient, stub: Any) -> None:
    assert "ModelInfer" in refused("UNIMPLEMENTED", client.get_model_repository_index)
    refused("UNIMPLEMENTED", client.get_inference_statistics)
    with pytest.raises(grpc.RpcError) as caught:  # a streaming RPC too
        list(stub.ModelStreamInfer(iter([service_pb2.ModelInferRequest(model_name="lit_demo")])))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


# --- classification --------------------------------------------------------------------------------------


def test_scores_equal_classify(gateway: SimpleNamespace, client: triton.InferenceServerClient) -> None:
    blobs = images(4)
    result = client.infer("lit_demo", classify_inputs(blobs, LABELS), request_id="req-7")
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float32 and scores.shape == (4, len(LABELS))
    np.testing.assert_allclose(scores, v1_scores(gateway.http, blobs, LABELS), atol=1e-5)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("lit_demo", "1", "req-7")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("scores", "FP32", [4, 10])]


def test_templates_input(gateway: SimpleNamespace, client: triton.InferenceServerClient) -> None:
    blobs = images(2)
    inputs = [*classify_inputs(blobs, LABELS), bytes_input("templates", [t.encode() for t in TEMPLATES])]
    scores = client.infer("lit_demo", inputs).as_numpy("scores")
    expected = v1_scores(gateway.http, blobs, LABELS, templates=TEMPLATES)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert not np.allclose(scores, v1_scores(gateway.http, blobs, LABELS), atol=1e-4)  # they mattered


def test_label_set_parameter(gateway: SimpleNamespace, client: triton.InferenceServerClient) -> None:
    put = httpx.put(f"{gateway.http}/v1/label-sets/grpc-shapes", json={"labels": LABELS[:5]}, timeout=60)
    assert put.status_code == 200, put.text
    blobs = images(3)
    result = client.infer("lit_demo", [bytes_input("images", blobs)], parameters={"label_set": "grpc-shapes"})
    np.testing.assert_allclose(
        result.as_numpy("scores"), v1_scores(gateway.http, blobs, LABELS[:5]), atol=1e-5
    )
    message = refused(
        "NOT_FOUND",
        client.infer,
        "lit_demo",
        [bytes_input("images", blobs)],
        parameters={"label_set": "gone"},
    )
    assert "gone" in message
    message = refused(
        "INVALID_ARGUMENT",
        client.infer,
        "lit_demo",
        [bytes_input("images", blobs)],
        parameters={"label_set": 3},
    )
    assert "label_set must be a string" in message


def test_version(gateway: SimpleNamespace, client: triton.InferenceServerClient) -> None:
    blobs = images(1)
    result = client.infer("lit_demo", classify_inputs(blobs, LABELS), model_version="1")
    assert result.get_response().model_version == "1"
    message = refused(
        "NOT_FOUND", client.infer, "lit_demo", classify_inputs(blobs, LABELS), model_version="2"
    )
    assert "no version '2'" in message and "serves version 1" in message


def test_typed_bytes_contents(gateway: SimpleNamespace, stub: Any) -> None:
    """Inputs as ``contents.bytes_contents`` instead of raw contents (what other v2 clients may send)."""
    blobs = images(2, offset=5)
    request = service_pb2.ModelInferRequest(model_name="lit_demo", id="typed")
    for name, values in (("images", blobs), ("labels", [s.encode() for s in LABELS[:4]])):
        tensor = request.inputs.add(name=name, datatype="BYTES", shape=[len(values)])
        tensor.contents.bytes_contents.extend(values)
    response = stub.ModelInfer(request)
    assert response.id == "typed" and list(response.outputs[0].shape) == [2, 4]
    scores = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(2, 4)
    np.testing.assert_allclose(scores, v1_scores(gateway.http, blobs, LABELS[:4]), atol=1e-5)

    request.inputs[0].shape[:] = [3]
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "shape [3] says 3" in error.details()
    request.inputs[0].shape[:] = [2]
    request.raw_input_contents.append(b"\x00\x00\x00\x00")  # raw contents for one input of two
    error = rpc_error(stub.ModelInfer, request)
    assert "raw_input_contents has 1 entries for 2 inputs" in error.details()
    assert error_code(error) == "invalid_binary_data"


# --- embeddings ------------------------------------------------------------------------------------------


def test_embeddings_equal_v1(gateway: SimpleNamespace, client: triton.InferenceServerClient) -> None:
    blobs, texts = images(3), ["a photo of a red circle.", "ünïcode tëxt", "a"]
    inputs = [bytes_input("images", blobs), bytes_input("texts", [t.encode() for t in texts])]
    result = client.infer("lit_demo.embed", inputs)
    encoded = [base64.b64encode(b).decode() for b in blobs]
    image_embeddings = result.as_numpy("image_embeddings")
    assert image_embeddings.shape == (3, 256)
    np.testing.assert_allclose(
        image_embeddings, v1_embeddings(gateway.http, "image", {"images": encoded}), atol=1e-6
    )
    np.testing.assert_allclose(
        result.as_numpy("text_embeddings"), v1_embeddings(gateway.http, "text", {"texts": texts}), atol=1e-6
    )


def test_requested_outputs(gateway: SimpleNamespace, client: triton.InferenceServerClient) -> None:
    blobs, texts = images(2), [b"a cat", b"a dog"]
    inputs = [bytes_input("images", blobs), bytes_input("texts", texts)]
    only = client.infer("lit_demo.embed", inputs, outputs=[triton.InferRequestedOutput("text_embeddings")])
    response = only.get_response()
    assert [o.name for o in response.outputs] == ["text_embeddings"] and len(
        response.raw_output_contents
    ) == 1
    assert only.as_numpy("image_embeddings") is None
    wanted = [triton.InferRequestedOutput("text_embeddings"), triton.InferRequestedOutput("image_embeddings")]
    both = client.infer("lit_demo.embed", inputs, outputs=wanted)
    assert [o.name for o in both.get_response().outputs] == ["text_embeddings", "image_embeddings"]
    np.testing.assert_array_equal(both.as_numpy("text_embeddings"), only.as_numpy("text_embeddings"))
    assert both.as_numpy("image_embeddings").shape == (2, 256)
    texts_only = [bytes_input("texts", texts)]
    assert [o.name for o in client.infer("lit_demo.embed", texts_only).get_response().outputs] == [
        "text_embeddings"
    ]
    message = refused(
        "INVALID_ARGUMENT",
        client.infer,
        "lit_demo.embed",
        texts_only,
        outputs=[triton.InferRequestedOutput("image_embeddings")],
    )
    assert "needs the input 'images'" in message


# --- errors ----------------------------------------------------------------------------------------------


def test_errors_carry_our_message_and_mapped_status(client: triton.InferenceServerClient) -> None:
    png = images(1)[0]
    labels = bytes_input("labels", [b"cat", b"dog"])
    floats = triton.InferInput("images", [2], "FP32")
    floats.set_data_from_numpy(np.zeros(2, np.float32))
    mismatched = bytes_input("images", [png, png])
    mismatched.set_shape([3])
    bad = "INVALID_ARGUMENT"
    cases: list[tuple[str, str, list[triton.InferInput], str]] = [
        (bad, "lit_demo", [bytes_input("images", [png[: len(png) // 2]]), labels], "damaged"),
        (bad, "lit_demo", [bytes_input("images", [b"not an image"]), labels], "not an image"),
        ("NOT_FOUND", "lit_demo.clip", [bytes_input("images", [png]), labels], "no model named 'lit_demo.c"),
        (bad, "lit_demo", [floats, labels], "must be BYTES"),
        (bad, "lit_demo", [labels], "missing input 'images'"),
        (bad, "lit_demo", [bytes_input("images", [png]), bytes_input("texts", [b"x"])], "unknown input 'tex"),
        (bad, "lit_demo", [bytes_input("images", [png]), bytes_input("labels", [b"\xff"])], "UTF-8"),
        (bad, "lit_demo", [mismatched, labels], "4-byte little-endian length"),
    ]  # fmt: skip
    for code, model, inputs, text in cases:
        assert text in refused(code, client.infer, model, inputs), (code, model, text)
    inputs = classify_inputs([png], LABELS[:3])
    assert "unknown output 'logits'" in refused(
        "INVALID_ARGUMENT", client.infer, "lit_demo", inputs, outputs=[triton.InferRequestedOutput("logits")]
    )
    classification = [triton.InferRequestedOutput("scores", class_count=2)]
    assert "classification" in refused(
        "INVALID_ARGUMENT", client.infer, "lit_demo", inputs, outputs=classification
    )


def test_errors_carry_our_code_in_trailing_metadata(stub: Any) -> None:
    unknown = rpc_error(stub.ModelInfer, service_pb2.ModelInferRequest(model_name="cats"))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND and error_code(unknown) == "unknown_model"
    png = images(1)[0]
    request = service_pb2.ModelInferRequest(model_name="lit_demo")
    request.inputs.add(name="images", datatype="BYTES", shape=[1]).contents.bytes_contents.append(png[:200])
    request.inputs.add(name="labels", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"cat")
    broken = rpc_error(stub.ModelInfer, request)
    assert broken.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(broken) == "undecodable_image"
    assert "Traceback" not in broken.details()
    metadata = rpc_error(stub.ModelMetadata, service_pb2.ModelMetadataRequest(name="lit_demo", version="9"))
    assert error_code(metadata) == "unknown_model"


def test_every_http_status_has_a_grpc_code() -> None:
    expected = {
        400: "INVALID_ARGUMENT", 413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT", 422: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED", 500: "INTERNAL", 502: "INTERNAL", 405: "INTERNAL",
    }  # fmt: skip
    for status in set(STATUS.values()) | set(expected):
        assert status_code(status) == grpc.StatusCode[expected[status]], status
    assert set(STATUS_CODES) - {501} <= set(expected)
    assert listen_address("::", 8001) == "[::]:8001" and listen_address("0.0.0.0", 1) == "0.0.0.0:1"


def test_message_size_and_request_timeout(tmp_path: Path) -> None:
    """A message over LIT_MAX_BODY_BYTES is refused by grpc itself (RESOURCE_EXHAUSTED); a request over
    LIT_REQUEST_TIMEOUT_S is DEADLINE_EXCEEDED."""
    port = free_port()
    env = {"LIT_GRPC_PORT": str(port), "LIT_MAX_BODY_BYTES": "200000", "LIT_REQUEST_TIMEOUT_S": "0.001"}
    with running_gateway(tmp_path, **env), triton.InferenceServerClient(url=f"127.0.0.1:{port}") as client:
        big = [b"\x89PNG" + bytes(300_000)]
        refused("RESOURCE_EXHAUSTED", client.infer, "lit_demo", classify_inputs(big, LABELS))
        message = refused("DEADLINE_EXCEEDED", client.infer, "lit_demo", classify_inputs(images(16), LABELS))
        assert "took longer than 0.001 s" in message
        assert client.get_model_metadata("lit_demo").versions == ["1"]  # metadata is not timed out


# --- API keys ----------------------------------------------------------------------------------------------


def test_api_keys(tmp_path: Path) -> None:
    port = free_port()
    with (
        running_gateway(tmp_path, LIT_GRPC_PORT=str(port), LIT_API_KEYS=json.dumps([KEY])),
        triton.InferenceServerClient(url=f"127.0.0.1:{port}") as client,
    ):
        blobs = images(2)
        for auth in ({"authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):
            scores = client.infer("lit_demo", classify_inputs(blobs, LABELS), headers=auth).as_numpy("scores")
            assert scores.shape == (2, len(LABELS))
            assert client.get_model_metadata("lit_demo.embed", headers=auth).versions == ["1"]
            assert client.get_server_metadata(headers=auth).name == "lit-zeroshot"
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("lit_demo")
        for headers in (
            None,
            {"authorization": "Bearer wrong"},
            {"x-api-key": KEY[:-1]},
            {"authorization": KEY},
        ):
            message = refused(
                "UNAUTHENTICATED", client.infer, "lit_demo", classify_inputs(blobs, LABELS), headers=headers
            )
            assert "authorization: Bearer <key>" in message and KEY not in message
            refused("UNAUTHENTICATED", client.get_server_metadata, headers=headers)
            refused("UNAUTHENTICATED", client.get_model_metadata, "lit_demo", headers=headers)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            error = rpc_error(stub.ServerMetadata, service_pb2.ServerMetadataRequest())
            assert error_code(error) == "unauthorized"


# --- off by default -----------------------------------------------------------------------------------------


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its socket inodes matched in /proc/net/tcp and tcp6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def pid_listening_on(port: int) -> int:
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if port in listening_ports(int(proc.name)):
                return int(proc.name)
        except OSError:
            continue
    raise AssertionError(f"no process listens on {port}")


def test_only_the_http_port_without_grpc_port(tmp_path: Path, gateway: SimpleNamespace) -> None:
    http_port = int(gateway.http.rsplit(":", 1)[1])
    assert listening_ports(pid_listening_on(http_port)) == {http_port, gateway.port}
    with running_gateway(tmp_path) as url:
        port = int(url.rsplit(":", 1)[1])
        assert listening_ports(pid_listening_on(port)) == {port}


def test_grpc_off_imports_no_grpc(tmp_path: Path) -> None:
    """In-process gateway with tritonclient installed and gRPC off: it serves, and imports no gRPC code."""
    code = f"""
import sys
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
import tritonclient.http  # importable, and HTTP's client needs no gRPC

sets = {str(tmp_path / "sets")!r}
settings = Settings(repository={str(REPOSITORY)!r}, label_store=sets, intra_op_threads=1)
with TestClient(create_app(settings)) as client:
    assert client.get("/readyz").status_code == 200
    infer = {{"inputs": [{{"name": "labels", "shape": [1], "datatype": "BYTES", "data": ["cat"]}}]}}
    assert client.post("/v2/models/lit_demo/infer", json=infer).status_code == 400  # routed, answered
    assert client.get("/v2/models/lit_demo").json()["versions"] == ["1"]
loaded = sorted(m for m in sys.modules if m.startswith(("grpc", "tritonclient.grpc")) and sys.modules[m])
assert loaded == ["tritonclient.grpc.model_config_pb2"], loaded  # the config protobuf alone, no gRPC
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=Path(__file__).parents[1])


def test_grpc_port_without_the_extra_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    monkeypatch.setitem(
        sys.modules, "tritonclient.grpc.service_pb2", None
    )  # import fails as if not installed
    settings = Settings(
        repository=tmp_path / "no_models", label_store=str(tmp_path / "sets"), grpc_port=free_port()
    )
    expected = r"LIT_GRPC_PORT is set.*pip install '\.\[triton\]'"
    with pytest.raises(RuntimeError, match=expected), TestClient(create_app(settings)):
        pass
