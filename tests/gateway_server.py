"""Start the real gateway (``python -m service.cli`` under uvicorn) on a free port for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "model_repository"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_gateway(workdir: Path, ready_path: str = "/readyz", **env: str) -> Iterator[str]:
    """Yield the base URL of a gateway process once ``ready_path`` answers 200; stop it afterwards.

    ``ready_path="/healthz"`` is for gateways that are never meant to become ready (no model).
    """
    port = free_port()
    environment = {
        **os.environ,
        "LIT_HOST": "127.0.0.1",
        "LIT_PORT": str(port),
        "LIT_REPOSITORY": str(REPOSITORY),
        "LIT_LABEL_STORE": str(workdir / "label_sets"),
        "LIT_INTRA_OP_THREADS": "1",
        **env,
    }
    log = open(workdir / f"gateway-{port}.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli"],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited: {(workdir / f'gateway-{port}.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}{ready_path}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gateway not ready within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        stop_process(process)
        log.close()
