"""A real ``redis-server`` (Debian package) on a free 127.0.0.1 port for tests, stopped by PID."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from harness.gateway import free_port, stop_process


@contextmanager
def running_redis(workdir: Path, port: int | None = None) -> Iterator[str]:
    """Yield ``redis://127.0.0.1:<port>/0`` once the server answers PING; stop it afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: bash scripts/system-deps.sh installs it")
    port = port or free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", ""]
    log = open(workdir / "redis.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start: {(workdir / 'redis.log').read_text()}"
                    ) from None
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        stop_process(process, 10)
        log.close()
