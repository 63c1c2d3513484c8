"""Triton serving a bundle's int8 variant through its ONNX Runtime backend (``--triton-precision int8``).

A repository whose active version has a gated int8 variant is promoted with
``TritonOptions(instance_kind="cpu", precision="int8")``: both configs name ``model.int8.onnx``, a real
Triton (``tests/triton_server.py``) runs that file, the gateway on Triton reports int8 from Triton's served
config and answers exactly what an embedded gateway with ``LIT_PRECISION=int8`` answers (not what fp32
gives); an explicit ``LIT_PRECISION`` that the configs do not serve is refused, naming the fix.
"""

from __future__ import annotations

import asyncio
import base64
import platform
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.gateway import running_gateway
from harness.images import LABELS
from harness.repositories import int8_repository
from lit_bundle.repository import load_bundle, promote
from lit_bundle.triton import TritonOptions, parse_config
from service.encoders import BackendConfigError
from service.precision import cpu_flags, cpu_lacks
from service.settings import Settings
from service.triton_backend import TritonEncoders
from tests.samples import Reference, as_matrix, images
from tests.triton_server import TritonServer, running_triton

INT8 = TritonOptions(instance_kind="cpu", precision="int8")
CONFIGS = ("lit_demo_image/config.pbtxt", "lit_demo_text/config.pbtxt")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lit_demo v2 (v1 plus a gated int8 variant), promoted for Triton to load model.int8.onnx."""
    repository = int8_repository(tmp_path_factory.mktemp("int8"))
    promote(repository, "lit_demo", 2, INT8)
    return repository


@pytest.fixture(scope="module")
def fp32_copy(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same repository with both configs naming model.onnx again."""
    copy = shutil.copytree(repository, tmp_path_factory.mktemp("fp32") / "model_repository")
    promote(copy, "lit_demo", 2, TritonOptions(instance_kind="cpu"))
    return copy


@pytest.fixture(scope="module")
def triton(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with running_triton(repository, tmp_path_factory.mktemp("triton")) as server:
        yield server


def _classify(url: str, blobs: list[bytes]) -> np.ndarray:
    body = {"images": [base64.b64encode(b).decode() for b in blobs], "labels": LABELS}
    response = httpx.post(f"{url}/v1/classify", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == {"name": "lit_demo", "version": 2}
    return as_matrix(response.json(), LABELS)


def test_triton_runs_the_int8_variant_as_the_embedded_gateway_does(
    repository: Path, triton: TritonServer, tmp_path: Path
) -> None:
    lacks = cpu_lacks("int8", cpu_flags(), platform.machine())
    if lacks:
        pytest.skip(f"the embedded gateway to compare with cannot run int8 here ({lacks})")
    for config in CONFIGS:
        assert parse_config((repository / config).read_text()).default_model_filename == "model.int8.onnx"
    (tmp_path / "triton").mkdir(), (tmp_path / "embedded").mkdir()
    env = {"LIT_REPOSITORY": str(repository), "LIT_PRECISION": "int8"}
    with (
        running_gateway(tmp_path / "triton", **triton.gateway_env("grpc", **env)) as on_triton,
        running_gateway(tmp_path / "embedded", **env) as embedded,
    ):
        listed = httpx.get(f"{on_triton}/v1/models").json()
        for info in (listed, listed["models"][0]):
            assert (info["backend"], info["version"], info["precision"]) == ("triton", 2, "int8")
        assert httpx.get(f"{embedded}/v1/models").json()["precision"] == "int8"
        blobs = images(8, offset=3)
        scores = _classify(on_triton, blobs)
        assert np.abs(scores - _classify(embedded, blobs)).max() <= 1e-5
        fp32 = Reference(repository).scores(blobs, LABELS, None)  # the fp32 model.onnx files
        assert np.abs(scores - fp32).max() > 1e-3, "Triton ran model.onnx, not the int8 variant"


def test_the_gateway_reads_what_triton_serves_not_only_its_repository(
    fp32_copy: Path, triton: TritonServer, tmp_path: Path
) -> None:
    """A gateway whose repository's configs name model.onnx, on a Triton serving model.int8.onnx: with
    LIT_PRECISION=fp32 it starts (its repository agrees) but is not ready, naming what Triton loads."""
    env = triton.gateway_env("grpc", LIT_REPOSITORY=str(fp32_copy), LIT_PRECISION="fp32")
    with running_gateway(tmp_path, ready_path="/healthz", **env) as url:
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503
        reason = ready.json()["error"]["message"]
        assert f"LIT_PRECISION=fp32 with LIT_BACKEND=triton, but Triton at {triton.grpc_url}" in reason
        assert "lit_demo_image from model.int8.onnx" in reason, reason
        assert "`lit-train promote lit_demo 2 --triton-precision fp32`" in reason, reason


def _settings(precision: str) -> Settings:
    return Settings(backend="triton", triton_url="127.0.0.1:1", precision=precision)


def _reported(repository: Path, precision: str) -> str:
    async def run() -> str:
        encoders = TritonEncoders.from_settings(load_bundle(repository), _settings(precision))
        try:
            return encoders.precision()  # before Triton answers: what the repository's configs name
        finally:
            await encoders.close()

    return asyncio.run(run())


def test_an_explicit_precision_must_be_what_the_repositorys_configs_serve(
    repository: Path, fp32_copy: Path
) -> None:
    assert [_reported(repository, p) for p in ("auto", "int8")] == ["int8", "int8"]
    assert [_reported(fp32_copy, p) for p in ("auto", "fp32")] == ["fp32", "fp32"]
    for where, precision, fix in (
        (fp32_copy, "int8", "`lit-train promote lit_demo 2 --triton-precision int8`"),
        (repository, "fp32", "`lit-train promote lit_demo 2 --triton-precision fp32`"),
        (repository, "bf16", "none on Triton"),
    ):
        with pytest.raises(BackendConfigError) as refused:
            TritonEncoders.from_settings(load_bundle(where), _settings(precision))
        message = str(refused.value)
        assert message.startswith(f"LIT_PRECISION={precision} with LIT_BACKEND=triton, but the configs in")
        assert fix in message and "LIT_PRECISION=auto" in message, message
