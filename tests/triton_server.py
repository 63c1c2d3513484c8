"""A real Triton Inference Server for tests: the ``tritonserver`` binary shipped in ``nvidia-pytriton``.

That build has only the Python backend, so :func:`python_backend_repository` mirrors a model repository
with the same configs (backend ``onnxruntime``, model names, versions, version policy, tensors, dynamic
batching, ``default_model_filename``), and a Python-based backend named ``onnxruntime``
(``triton_python_model/model.py``) serves the file each config names, ``model.onnx`` unless it names a
variant such as ``model.int8.onnx``; Triton's model config API reports the configs as real Triton would.
The server binds 127.0.0.1 on free ports, is polled until ready, and is stopped by PID (SIGTERM, then
SIGKILL); a SIGTERM sent to the test process stops it too, so no server outlives its test run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from google.protobuf import text_format

from harness.gateway import free_port
from lit_bundle.triton import parse_config

MODEL_PY = Path(__file__).with_name("triton_python_model") / "model.py"
STUB_NUMPY = "numpy==1.26.4"


def stub_packages() -> Path:
    """NumPy 1.x for the Python backend stub, ahead of this environment's packages.

    The stub is built with pybind11 against NumPy 1.x and misreads NumPy 2 arrays (outputs arrive as
    zero bytes), so ``scripts/test.sh`` installs NumPy 1.26 into this folder for the stub alone.
    """
    folder = Path(sys.prefix) / "triton-stub-packages"
    if not (folder / "numpy").is_dir():
        raise RuntimeError(
            f"{folder} has no NumPy for the Triton Python backend stub: "
            f"pip install --no-deps --target {folder} '{STUB_NUMPY}' (scripts/test.sh does this)"
        )
    return folder


def pytriton_root() -> Path:
    """The installed ``pytriton`` package folder, found without importing it (its deps are not needed)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed: run `bash scripts/test.sh`, which installs it")
    return Path(next(iter(spec.submodule_search_locations)))


def python_backend_repository(source: Path, destination: Path) -> Path:
    """Mirror ``source`` (onnxruntime configs) in ``destination`` for the Python-based ``onnxruntime``
    backend: each version's ``model.onnx`` there is the file its config names (``default_model_filename``,
    default ``model.onnx``), so the stand-in runs what Triton's ONNX Runtime backend would."""
    from tritonclient.grpc import model_config_pb2

    for model_dir in sorted(p for p in source.iterdir() if (p / "config.pbtxt").is_file()):
        config = parse_config((model_dir / "config.pbtxt").read_text())
        config.ClearField("optimization")  # TensorRT settings mean nothing to the stand-in
        for group in config.instance_group:
            group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
        target = destination / model_dir.name
        target.mkdir(parents=True, exist_ok=True)
        (target / "config.pbtxt").write_text(text_format.MessageToString(config))
        served = config.default_model_filename or "model.onnx"
        for version in (p for p in model_dir.iterdir() if p.name.isdigit() and (p / served).is_file()):
            (target / version.name).mkdir(exist_ok=True)
            shutil.copy(version / served, target / version.name / "model.onnx")
    return destination


def _backend_directory(workdir: Path) -> Path:
    """Triton's backend folder: the Python backend with its stub built for this interpreter's version, and
    ``onnxruntime``, a Python-based backend (a ``model.py`` the Python backend runs) standing in for Triton's
    ONNX Runtime backend. The files are copies: Triton refuses a Python-based backend whose Python backend
    library is a link to a file outside the folder."""
    dist = pytriton_root() / "tritonserver"
    backends = workdir / "backends"
    python = backends / "python"
    if not python.exists():
        python.mkdir(parents=True)
        for item in (dist / "backends" / "python").iterdir():
            if item.is_file():
                shutil.copy2(item, python / item.name)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy2(stub, python / stub.name)
        (backends / "onnxruntime").mkdir()
        shutil.copy(MODEL_PY, backends / "onnxruntime" / "model.py")
    return backends


class TritonServer:
    """One ``tritonserver`` process on fixed free ports; it can be stopped and started again on them."""

    def __init__(self, repository: Path, workdir: Path) -> None:
        self.repository, self.workdir = repository, workdir
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "tritonserver.log"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def url(self, protocol: str) -> str:
        return self.grpc_url if protocol == "grpc" else self.http_url

    def start(self, timeout_s: float = 90.0) -> None:
        root = pytriton_root()
        libs = [sysconfig.get_config_var("LIBDIR"), str(root.parent / "nvidia_pytriton.libs")]
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": ":".join([*libs, os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(":"),
            # The stub embeds this interpreter's libpython; model.py puts these folders on its sys.path.
            "PYTHONPATH": os.pathsep.join(
                [str(stub_packages()), *sorted(set(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))]
            ),
        }
        command = [
            str(root / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={_backend_directory(self.workdir)}",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false", "--exit-timeout-secs=5", "--log-verbose=0",
        ]  # fmt: skip
        log = open(self.log_path, "a")  # noqa: SIM115 - the child keeps its own copy of the descriptor
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({self.process.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tritonserver not ready within {timeout_s:g} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://{self.http_url}/v2/health/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def terminate(self) -> None:
        """Ask the server to stop (SIGTERM) without waiting: it drains, then exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (no drain), and wait until it is gone. Its Python-backend
        stubs notice and exit by themselves; it can be started again on the same ports at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def gateway_env(self, protocol: str, **extra: str) -> dict[str, str]:
        """``LIT_*`` settings for a gateway using this server over ``protocol`` (grpc or http)."""
        url = self.url(protocol)
        return {"LIT_BACKEND": "triton", "LIT_TRITON_URL": url, "LIT_TRITON_PROTOCOL": protocol, **extra}

    def stop(self) -> None:
        """Stop the server and wait for it to exit (SIGKILL after 20 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@contextmanager
def running_triton(source_repository: Path, workdir: Path) -> Iterator[TritonServer]:
    """Serve ``source_repository`` (mirrored as Python-backend models) until the block ends."""
    server = TritonServer(python_backend_repository(source_repository, workdir / "repository"), workdir)
    previous = signal.getsignal(signal.SIGTERM)

    def stop_then_exit(signum, frame):  # pytest killed by CI: take the server down with it
        server.stop()
        signal.signal(signal.SIGTERM, previous)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, stop_then_exit)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
