"""A real gateway process (``python -m service.cli`` under uvicorn) on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "model_repository"  # the committed demo model


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


def gateway_environment(port: int, workdir: Path, **env: str) -> dict[str, str]:
    """This process's environment plus the gateway's settings: ``port`` on 127.0.0.1, the demo model,
    label sets under ``workdir``, one intra-op thread; ``env`` overrides any of them."""
    return {
        **os.environ,
        "LIT_HOST": "127.0.0.1",
        "LIT_PORT": str(port),
        "LIT_REPOSITORY": str(REPOSITORY),
        "LIT_LABEL_STORE": str(workdir / "label_sets"),
        "LIT_INTRA_OP_THREADS": "1",
        **env,
    }


def spawn_gateway(environment: dict[str, str], workdir: Path, log: IO[str]) -> subprocess.Popen:
    """Start ``python -m service.cli`` in ``workdir`` with ``environment``, its output going to ``log``."""
    command = [sys.executable, "-m", "service.cli"]
    return subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


@contextmanager
def running_gateway(workdir: Path, ready_path: str = "/readyz", **env: str) -> Iterator[str]:
    """Yield the base URL of a gateway process once ``ready_path`` answers 200; stop it afterwards.

    ``ready_path="/healthz"`` is for gateways that are never meant to become ready (no model). The
    gateway's output goes to ``<workdir>/gateway-<port>.log``.
    """
    port = free_port()
    log_path = workdir / f"gateway-{port}.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    process = spawn_gateway(gateway_environment(port, workdir, **env), workdir, log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited: {log_path.read_text()[-3000:]}")
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


def gateway_pid() -> int:
    """The pid of the gateway process this process started (``running_gateway`` does not expose it)."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = stat.read_text().rsplit(")", 1)[1].split()[1]
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == me and b"service.cli" in cmdline:
            return int(stat.parent.name)
    raise RuntimeError("no gateway child process (python -m service.cli) found")
