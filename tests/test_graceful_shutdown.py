"""Graceful shutdown: SIGTERM to a real gateway process while clients load it.

What happens (uvicorn, ``service/shutdown.py``): within 0.1 s of the signal the listening socket closes,
so a new connection is **refused** (ECONNREFUSED, not a 503); idle keep-alive connections are closed by
the server at once (a client that writes a request on one at that moment gets a reset or EOF, and that
request was never processed, so it is safe to retry elsewhere); requests already being read or served
finish with their normal answer, sent with ``Connection: close``. The process exits once they are done,
and always within ``LIT_SHUTDOWN_GRACE_S``: requests still running when the drain window (the grace
period less one second) ends get 503 ``shutting_down``. The process then ends by the SIGTERM it got, as
uvicorn does (wait status: signalled, SIGTERM). Label sets are written atomically, so every set on disk
afterwards is whole, whether it was written long before or during the drain.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from harness import load, workload
from harness.gateway import gateway_pid, running_gateway
from harness.images import LABELS

EARLIER = {"pets": ["cat", "dog", "hamster"], "shapes": LABELS}


def many_labels(tag: str, count: int) -> list[str]:
    """``count`` labels nobody has encoded yet: each costs the text encoder work (slow requests)."""
    return [f"{tag} object number {i}" for i in range(count)]


def exit_status(pid: int) -> int | None:
    """None while process ``pid`` (our child) runs; once it has exited (a zombie until ``running_gateway``
    reaps it), its wait status."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[49]) if fields[0] in "ZX" else None


def ended_by_sigterm(status: int | None) -> bool:
    """uvicorn shuts down cleanly, then raises the signal it caught again: that is how it exits."""
    return status is not None and os.waitstatus_to_exitcode(status) == -signal.SIGTERM


def until(check: Callable[[], object], seconds: float, what: str) -> float:
    """Poll ``check`` every 10 ms until it is truthy; the perf_counter time it became so."""
    deadline = time.perf_counter() + seconds
    while not check():
        assert time.perf_counter() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.01)
    return time.perf_counter()


def refuses(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response | Exception, float]:
    try:
        result: httpx.Response | Exception = call()
    except httpx.TransportError as exc:
        result = exc
    return result, time.perf_counter()


def idle_keep_alive(host: str, port: int) -> socket.socket:
    """A keep-alive connection that has served one request and now sits idle."""
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(f"GET /healthz HTTP/1.1\r\nhost: {host}:{port}\r\n\r\n".encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def read_back(url: str, names: list[str]) -> dict[str, list[str] | None]:
    answers = {}
    for name in names:
        response = httpx.get(f"{url}/v1/label-sets/{name}", timeout=10)
        answers[name] = response.json()["labels"] if response.status_code == 200 else None
    return answers


def test_sigterm_under_load_finishes_requests_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    grace_s = 10.0
    with running_gateway(tmp_path, LIT_SHUTDOWN_GRACE_S=str(grace_s)) as url:
        host, port = workload.target(url)
        for name, labels in EARLIER.items():
            httpx.put(f"{url}/v1/label-sets/{name}", json={"labels": labels}, timeout=30).raise_for_status()
        work = workload.prepare(url)
        pid = gateway_pid()
        idle = idle_keep_alive(host, port)
        during = many_labels("during", 1500)  # about 1.5 s of text encoding, each
        classify = {
            "images": [base64.b64encode(work.blobs[0]).decode()],
            "labels": many_labels("classify", 1500),
            "top_k": 3,
        }
        traffic = load.Load(url, work.samples, work.answers, clients=32, seconds=40, timeout_s=grace_s + 5)
        with traffic, ThreadPoolExecutor(2) as pool:
            time.sleep(1.5)
            slow: list[Future] = [
                pool.submit(timed, lambda: httpx.put(f"{url}/v1/label-sets/during", json={"labels": during},
                                                     timeout=30)),
                pool.submit(timed, lambda: httpx.post(f"{url}/v1/classify", json=classify, timeout=30)),
            ]  # fmt: skip
            time.sleep(0.5)
            assert not any(f.done() for f in slow), "the slow requests must still be running at SIGTERM"
            signalled = time.perf_counter()
            os.kill(pid, signal.SIGTERM)
            refused = until(lambda: refuses(host, port), 5, "new connections refused")
            with pytest.raises(httpx.ConnectError):
                httpx.put(f"{url}/v1/label-sets/after", json={"labels": ["too", "late"]}, timeout=5)
            idle_closed = until(lambda: closed_by_server(idle), 2, "idle keep-alive connection closed")
            exited = until(lambda: exit_status(pid) is not None, grace_s + 5, "process exit")
            status = exit_status(pid)
            outcomes = [f.result(timeout=10) for f in slow]
            traffic.wait()
        files = sorted(p.name for p in (tmp_path / "label_sets").iterdir())

    done = [round(t - signalled, 2) for _, t in outcomes]
    print(
        f"\nSIGTERM -> new connections refused {refused - signalled:.2f} s, idle keep-alive closed "
        f"{idle_closed - signalled:.2f} s, slow requests done {done} s, exit {exited - signalled:.2f} s "
        f"(grace {grace_s:g} s, wait status {status})"
    )
    # The slow requests were in flight at SIGTERM: they finished normally, announcing the close.
    for response, finished in outcomes:
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 200, response.text
        assert response.headers["connection"] == "close"
        assert 0 < finished - signalled < grace_s
    assert outcomes[1][0].json()["results"][0]["predictions"][0]["label"].startswith("classify object")
    # Load: nothing but right 200s, then (after SIGTERM only) connections refused, reset or closed.
    answered = [o for o in traffic.outcomes if o.status]
    failed = [o for o in traffic.outcomes if not o.status]
    after = sum(o.finished > signalled for o in answered)
    print(
        f"load: {len(answered)} answered ({after} after SIGTERM), then {sorted({o.failure for o in failed})}"
    )
    assert {o.status for o in answered} == {200}
    assert not any(o.wrong for o in answered)
    assert all(o.sent < refused for o in answered)  # nothing sent after the socket closed was served
    assert any(o.finished > signalled and o.closing for o in answered)  # in flight at SIGTERM: finished
    assert failed and all(o.finished > signalled for o in failed)
    assert {o.failure for o in failed} <= {"refused", "reset", "closed"}  # no timeouts: nothing hung
    assert refused - signalled < 1.0
    assert ended_by_sigterm(status) and exited - signalled <= grace_s

    # Every label set on disk is whole: those written long before, the one written during the drain;
    # the one sent after SIGTERM was never accepted. No temporary files are left behind.
    assert files == ["during.json", f"{workload.LABEL_SET}.json", "pets.json", "shapes.json"]
    with running_gateway(tmp_path) as url:
        stored = read_back(url, [*EARLIER, "during", workload.LABEL_SET, "after"])
    assert stored == {**EARLIER, "during": during, workload.LABEL_SET: LABELS, "after": None}


def test_work_longer_than_the_grace_period_is_cut_off_in_time(tmp_path: Path) -> None:
    grace_s = 2.0
    with running_gateway(tmp_path, LIT_SHUTDOWN_GRACE_S=str(grace_s)) as url:
        httpx.put(
            f"{url}/v1/label-sets/pets", json={"labels": EARLIER["pets"]}, timeout=30
        ).raise_for_status()
        pid = gateway_pid()
        huge = {"labels": many_labels("huge", 8000)}  # about 8 s of text encoding
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(timed, lambda: httpx.put(f"{url}/v1/label-sets/huge", json=huge, timeout=30))
            time.sleep(0.5)
            assert not slow.done()
            signalled = time.perf_counter()
            os.kill(pid, signal.SIGTERM)
            exited = until(lambda: exit_status(pid) is not None, grace_s + 10, "process exit")
            response, finished = slow.result(timeout=10)
        status = exit_status(pid)
    print(
        f"\nSIGTERM -> exit {exited - signalled:.2f} s (grace {grace_s:g} s, wait status {status}); "
        f"the slow request got {response!r} after {finished - signalled:.2f} s"
    )
    assert exited - signalled <= grace_s
    assert ended_by_sigterm(status)
    # Cut off at the end of the drain window (the grace period less 1 s), with the API's own error.
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "shutting_down"
    assert finished - signalled >= grace_s - 1 - 0.2
    with running_gateway(tmp_path) as url:
        assert read_back(url, ["pets", "huge"]) == {"pets": EARLIER["pets"], "huge": None}
