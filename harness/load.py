"""Closed-loop load clients against a gateway on 127.0.0.1, every request recorded as an :class:`Outcome`.

The client is lean (it shares the machine's cores with the gateway): pre-built HTTP/1.1 requests written
on a raw asyncio stream, responses read by ``content-length``. Every loop here is bounded in time and in
count, and every connection goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.usage import rss_bytes
from harness.workload import Answer, Sample, Workload, is_wrong, target

MAX_REQUESTS_PER_CLIENT = 1_000_000  # a count bound on every client loop, beside its time bound
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)
_RETRY_AFTER = re.compile(rb"\r\nretry-after:\s*(\S+)", re.IGNORECASE)


@dataclass(slots=True)
class Outcome:
    """One request: when it was sent and answered, and how."""

    sample: int
    images: int
    sent: float  # time.perf_counter()
    finished: float
    status: int  # 0: no HTTP response (see ``failure``)
    failure: str = ""  # refused, reset, closed (EOF), timeout: the request got no response
    wrong: bool = False  # a 200 whose answers are not its images' own
    code: str = ""  # error code of a non-200 answer
    retry_after: str = ""
    closing: bool = False  # the response said Connection: close

    @property
    def latency(self) -> float:
        return self.finished - self.sent


def _failure(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed"
    return "reset" if isinstance(exc, ConnectionError) else f"{type(exc).__name__}"


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """One HTTP/1.1 response: its status, its head (status line and headers) and its body, read by
    ``content-length`` (the gateway always sends it)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = _LENGTH.search(head)
    if length is None:
        raise ConnectionError(f"response without content-length: {head[:200]!r}")
    return int(head[9:12]), head, await reader.readexactly(int(length.group(1)))


def _error_code(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


def runner_options() -> dict[str, Any]:
    """Keyword arguments for ``asyncio.Runner``: uvloop's event loop where it is installed."""
    try:
        import uvloop
    except ImportError:
        return {}
    return {"loop_factory": uvloop.new_event_loop}


@dataclass
class Load:
    """``clients`` closed-loop clients against ``url`` in a background thread (its own event loop) for at
    most ``seconds``; each request is answered within ``timeout_s`` or counted as a timeout.

    Clients start one after another over ``ramp_s``. Each sends the next request as soon as the previous
    answer arrived (after a 429, with ``honour_retry_after``, it first waits what the response's
    ``Retry-After`` says, times a random factor between 0.5 and 1.5 so that retries spread), reconnects
    when the server closes the connection, and stops when a connection is refused (the server is gone).
    ``stop()`` ends the load early; requests in flight then finish (or time out). The gateway's RSS
    (``pid``) is sampled every ``sample_s``.
    """

    url: str
    samples: Sequence[Sample]
    answers: Sequence[Answer]
    clients: int
    seconds: float
    timeout_s: float = 30.0
    pid: int | None = None
    sample_s: float = 0.5
    honour_retry_after: bool = False
    ramp_s: float = 0.0
    max_requests: int = MAX_REQUESTS_PER_CLIENT
    outcomes: list[Outcome] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (perf_counter, bytes)

    def __post_init__(self) -> None:
        self._host, self._port = target(self.url)
        self.started = self.stop_at = 0.0
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> Load:
        self.started = time.perf_counter()
        self.stop_at = self.started + self.seconds
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the load now; wait until every client has finished (at most ``timeout_s`` more)."""
        self.stop_at = min(self.stop_at, time.perf_counter())
        self.wait()

    def wait(self) -> None:
        """Wait until the load has run its course."""
        self._thread.join(max(0.0, self.stop_at - time.perf_counter()) + self.timeout_s + 10)
        if self._thread.is_alive():
            raise RuntimeError("load clients did not finish in time")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            with asyncio.Runner(**runner_options()) as runner:
                runner.run(self._main())
        except BaseException as exc:  # re-raised in the caller's thread by wait()
            self._error = exc

    async def _main(self) -> None:
        monitor = asyncio.get_running_loop().create_task(self._monitor())
        try:
            await asyncio.gather(*(self._client(i) for i in range(self.clients)))
        finally:
            monitor.cancel()

    async def _monitor(self) -> None:
        while self.pid is not None:
            self.rss.append((time.perf_counter(), rss_bytes(self.pid)))
            await asyncio.sleep(self.sample_s)

    async def _client(self, first: int) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        jitter = random.Random(first)
        await asyncio.sleep(self.ramp_s * first / self.clients)
        try:
            for count in range(self.max_requests):
                if time.perf_counter() >= self.stop_at:
                    break
                index = (first + count) % len(self.samples)
                sample = self.samples[index]
                sent = time.perf_counter()
                outcome = Outcome(index, len(sample.images), sent, sent, 0)
                self.outcomes.append(outcome)
                try:
                    if writer is None:
                        connect = asyncio.open_connection(self._host, self._port)
                        reader, writer = await asyncio.wait_for(connect, self.timeout_s)
                    assert reader is not None
                    writer.write(sample.request)
                    reply = await asyncio.wait_for(read_response(reader), self.timeout_s)
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    outcome.finished, outcome.failure = time.perf_counter(), _failure(exc)
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    if outcome.failure == "refused":
                        return  # the server has stopped listening
                    await asyncio.sleep(0.05)
                    continue
                outcome.finished = time.perf_counter()
                outcome.status, head, body = reply
                outcome.closing = _CLOSE.search(head) is not None
                if outcome.status == 200:
                    outcome.wrong = is_wrong(body, sample.images, self.answers)
                else:
                    outcome.code = _error_code(body)
                    retry = _RETRY_AFTER.search(head)
                    outcome.retry_after = retry.group(1).decode() if retry else ""
                if outcome.closing:
                    writer.close()
                    reader = writer = None
                if outcome.status == 429 and self.honour_retry_after:
                    pause = float(outcome.retry_after or 1) * jitter.uniform(0.5, 1.5)
                    await asyncio.sleep(min(pause, self.stop_at - time.perf_counter()))
        finally:
            if writer is not None:
                writer.close()

    def rss_at(self, moment: float) -> int:
        """The RSS sample nearest ``moment`` (a perf_counter time)."""
        if not self.rss:
            raise RuntimeError("no RSS samples (no pid given)")
        return min(self.rss, key=lambda s: abs(s[0] - moment))[1]


def sequential(url: str, work: Workload, count: int) -> list[Outcome]:
    """``count`` requests one after another on one connection (single-image samples only)."""
    singles = [s for s in work.samples if len(s.images) == 1]
    with Load(url, singles, work.answers, clients=1, seconds=60, max_requests=count) as load:
        load.wait()
    return load.outcomes
