"""Backend faults: Triton killed (SIGKILL, no drain) and restarted under load.

A real ``tritonserver`` (nvidia-pytriton) serves the committed bundle; a real gateway uses it over gRPC
or HTTP with a 2 s call timeout and 2 retries, while 16 closed-loop clients classify. When Triton dies,
requests get 503 ``backend_unavailable`` (never a 500, 502 or 504, never a hang: every request is
answered, well within the clients' 15 s), ``/readyz`` turns 503 and ``lit_backend_up`` 0. Triton is
started again on the same ports; with no gateway restart, ``/readyz`` turns 200, ``lit_backend_up`` 1 and
every request sent from then on is answered 200 with each image's own answer.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from harness import drills, load, workload
from harness.gateway import REPOSITORY, running_gateway
from harness.metrics import metric
from tests.triton_server import running_triton

CALL_TIMEOUT_S = 2.0  # LIT_TRITON_TIMEOUT_S
RETRIES = 2  # LIT_TRITON_RETRIES
CLIENT_TIMEOUT_S = 15.0  # each request must be answered within this (the gateway's worst case is ~6.2 s)


def state(url: str) -> tuple[int, float]:
    """``/readyz`` status and ``lit_backend_up``, each asked with a 5 s timeout (a hang fails the test)."""
    ready = httpx.get(f"{url}/readyz", timeout=5).status_code
    return ready, metric(httpx.get(f"{url}/metrics", timeout=5).text, "lit_backend_up")


def until(check, seconds: float, what: str) -> float:
    deadline = time.perf_counter() + seconds
    while not check():
        assert time.perf_counter() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.05)
    return time.perf_counter()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_killed_and_restarted_under_load(tmp_path: Path, protocol: str) -> None:
    env = {"LIT_TRITON_TIMEOUT_S": str(CALL_TIMEOUT_S), "LIT_TRITON_RETRIES": str(RETRIES)}
    with (
        running_triton(REPOSITORY, tmp_path / "triton") as triton,
        running_gateway(tmp_path, **triton.gateway_env(protocol, **env)) as url,
    ):
        work = workload.prepare(url)
        assert state(url) == (200, 1)
        traffic = load.Load(
            url, work.samples, work.answers, clients=16, seconds=60, timeout_s=CLIENT_TIMEOUT_S
        )
        with traffic:
            time.sleep(2)
            killed = time.perf_counter()
            triton.kill()
            down = until(lambda: state(url) == (503, 0), 10, "/readyz 503 and lit_backend_up 0")
            reason = httpx.get(f"{url}/readyz", timeout=5).json()["error"]["message"]
            time.sleep(1.5)  # the outage, under load
            restarting = time.perf_counter()
            triton.start()  # same ports; returns once Triton is ready
            triton_ready = time.perf_counter()
            up = until(lambda: state(url) == (200, 1), 15, "/readyz 200 and lit_backend_up 1")
            time.sleep(2)  # serving again
            traffic.stop()
        errors = metric(url, "lit_backend_errors_total")

    outcomes = traffic.outcomes
    unavailable = [o for o in outcomes if o.status == 503]
    print(
        f"\n{protocol}: /readyz 503 {down - killed:.2f} s after SIGKILL; Triton restarted in "
        f"{triton_ready - restarting:.1f} s; /readyz 200 {up - triton_ready:.2f} s after Triton was ready. "
        f"Load: {drills.summarize(outcomes, traffic.started, float('inf'))['statuses']}, slowest answer "
        f"{max(o.latency for o in outcomes):.2f} s, slowest 503 {max(o.latency for o in unavailable):.2f} s"
    )
    assert f"Triton at {triton.url(protocol)}" in reason, reason
    # Every request got an answer (no transport failure, no timeout: nothing hung), a 200 or a 503.
    assert {o.status for o in outcomes} == {200, 503}, drills.summarize(outcomes, 0, float("inf"))["statuses"]
    assert all(o.code == "backend_unavailable" for o in unavailable)
    assert not any(o.wrong for o in outcomes)
    # 503s only while Triton was away; every request sent once the gateway was ready again was served.
    assert all(killed < o.finished for o in unavailable)
    assert all(o.status == 200 for o in outcomes if o.sent > up)
    assert sum(o.sent > up for o in outcomes) > 16
    assert errors >= len(unavailable) > 0
