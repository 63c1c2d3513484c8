"""Provider truth: what is asked for is what runs, or start-up stops and says which library is missing.

The last tests use `.venv-gpu` (made by scripts/test.sh): the real onnxruntime-gpu, on a machine without
CUDA libraries, where ONNX Runtime itself lists CUDA as available and would fall back to the CPU.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from harness.gateway import REPOSITORY, ROOT, free_port, stop_process
from lit_bundle.repository import load_bundle
from service.providers import (
    ProviderError,
    check_loaded,
    choose_providers,
    cuda_options,
    load_error,
    session_providers,
    tensorrt_options,
)

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
GPU_PYTHON = ROOT / ".venv-gpu" / "bin" / "python"


def test_provider_choice() -> None:
    assert choose_providers(["auto"], [CPU]) == [CPU]
    assert choose_providers(["auto"], [CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers(["cpu"], [CUDA, CPU]) == [CPU]
    assert choose_providers(["tensorrt"], [TRT, CUDA, CPU]) == [TRT, CUDA]  # CUDA after TensorRT, always
    assert choose_providers(["tensorrt", "cuda"], [TRT, CUDA, CPU]) == [TRT, CUDA]
    with pytest.raises(ProviderError, match="cuda was requested"):
        choose_providers(["cuda"], [CPU])
    with pytest.raises(ProviderError, match="unknown provider"):
        choose_providers(["rocm"], [CPU])


def test_tensorrt_gets_fp16_caches_and_profiles_from_the_manifest(tmp_path: Path) -> None:
    manifest = load_bundle(REPOSITORY).manifest
    image = tensorrt_options(manifest.image_encoder, 32, manifest.text.context_length, tmp_path / "trt")
    size = manifest.preprocess.size
    assert image["trt_fp16_enable"] and image["trt_engine_cache_enable"] and image["trt_timing_cache_enable"]
    assert image["trt_engine_cache_path"] == image["trt_timing_cache_path"] == str(tmp_path / "trt")
    assert (tmp_path / "trt").is_dir()
    assert image["trt_profile_min_shapes"] == f"pixels:1x{size}x{size}x3"
    assert image["trt_profile_max_shapes"] == f"pixels:32x{size}x{size}x3"
    text = tensorrt_options(manifest.text_encoder, 256, manifest.text.context_length, tmp_path / "trt")
    length = manifest.text.context_length
    shortest = 1 if manifest.text_encoder.inputs[0].shape[-1] == -1 else length  # dynamic or fixed length
    assert text["trt_profile_min_shapes"] == f"input_ids:1x{shortest},attention_mask:1x{shortest}"
    assert text["trt_profile_max_shapes"] == f"input_ids:256x{length},attention_mask:256x{length}"
    providers = session_providers(["tensorrt", "cuda", "cpu"], text)
    assert providers == [(TRT, text), CUDA, CPU]
    fp32 = session_providers(["tensorrt", "cuda", "cpu"], text, cuda_options("fp32"))
    assert fp32 == [(TRT, text), (CUDA, {"use_tf32": "0"}), CPU]  # float32 means float32, not TF32
    assert session_providers(["cuda", "cpu"], None, cuda_options("fp16")) == [CUDA, CPU]


class FakeSession:
    def __init__(self, providers: list[str]) -> None:
        self.providers, self.fallback = providers, True

    def get_providers(self) -> list[str]:
        return self.providers

    def disable_fallback(self) -> None:
        self.fallback = False


def test_a_named_provider_that_did_not_load_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    session = FakeSession([CPU])
    with pytest.raises(
        ProviderError, match=r"cuda was requested for the image encoder but did not load: .*Fix"
    ):
        check_loaded(session, ["cuda", "cpu"], True, "image encoder")  # type: ignore[arg-type]
    assert not session.fallback, "run-time fallback to the CPU must be off"
    with caplog.at_level(logging.WARNING):
        check_loaded(session, ["cuda", "cpu"], False, "text encoder")  # type: ignore[arg-type]
    assert "auto: cuda skipped for the text encoder" in caplog.text
    check_loaded(FakeSession([CUDA, CPU]), ["cuda", "cpu"], True, "image encoder")  # type: ignore[arg-type]


def test_the_reason_names_what_cannot_load() -> None:
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():  # a GPU build: its own test below covers the message
        pytest.skip("this venv has onnxruntime-gpu")
    assert load_error("cuda") == "this onnxruntime has no libonnxruntime_providers_cuda.so"


def _gateway(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = tmp_path / f"gateway-{port}.log"
    environment = {
        **os.environ,
        "LIT_HOST": "127.0.0.1",
        "LIT_PORT": str(port),
        "LIT_REPOSITORY": str(REPOSITORY),
        "LIT_LABEL_STORE": str(tmp_path / "label_sets"),
        **env,
    }
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(GPU_PYTHON), "-m", "service.cli"], env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    return process, f"http://127.0.0.1:{port}", log


needs_gpu_venv = pytest.mark.skipif(
    not GPU_PYTHON.exists(), reason=".venv-gpu is missing: scripts/test.sh creates it (run that)"
)


@needs_gpu_venv
def test_with_onnxruntime_gpu_but_no_cuda_libraries_a_cuda_request_stops_start_up(tmp_path: Path) -> None:
    process, _, log = _gateway({"LIT_PROVIDERS": '["cuda"]'}, tmp_path)
    try:
        code = process.wait(timeout=120)
    finally:
        stop_process(process)
    text = log.read_text()
    assert code != 0, text
    assert "provider cuda was requested for the image encoder of lit_demo v1 but did not load" in text
    assert "cannot open shared object file" in text and ".so" in text  # the missing library, by name
    assert "install the gpu extra" in text


@needs_gpu_venv
def test_with_onnxruntime_gpu_but_no_cuda_libraries_auto_serves_on_the_cpu_and_says_so(
    tmp_path: Path,
) -> None:
    import time

    process, url, log = _gateway({"LIT_PROVIDERS": '["auto"]'}, tmp_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        info = httpx.get(f"{url}/v1/models", timeout=5).json()
        ready = httpx.get(f"{url}/readyz", timeout=5).json()
    finally:
        stop_process(process)
    assert info["providers"] == [CPU], json.dumps(info)
    assert ready.get("providers") == [CPU], json.dumps(ready)
    assert "auto: cuda skipped for the image encoder" in log.read_text()
