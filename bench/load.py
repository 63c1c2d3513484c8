"""Load drills against a real gateway process (issue 8): sustained load, overload, and the building blocks
the shutdown and Triton-fault tests drive load with.

*Load* (``python -m bench.load --clients 64 --seconds 60``): a gateway on the committed demo model
(embedded ONNX Runtime) and closed-loop clients, each on one keep-alive connection, sending
``POST /v1/classify`` with one or two of a few distinct synthetic images whose answers differ. Each
image's answer is first taken from a single request to the idle gateway; under load every response must
give each of its images that image's answer (the same labels, the same top label, every score within
``1e-4``), so a response that carried another request's image is caught. Reported: requests and
images/s, latency p50/p99, 5xx and other statuses, wrong answers, transport failures, and the gateway's
RSS after the warm-up and at the end (which must stay within 10%). Exit status 1 when a check fails.

*Overload* (``python -m bench.load --overload --clients 256 --seconds 10 --max-queue-images 8``): a
gateway with a small ``LIT_MAX_QUEUE_IMAGES`` and far more clients than it can serve, in two phases:
*polite* clients wait what a 429's ``Retry-After`` says (with jitter) before they try again, a *flood*
sends again at once. Requests beyond the queue must get 429 ``overloaded`` with ``Retry-After``, fast
(polite: within a few idle latencies; flood: sooner than served requests, which wait for the queue),
with no 5xx; RSS must stay within an envelope and stop growing; once the load stops, single requests
must be as fast as before.

The client is lean (it shares the machine's cores with the gateway): pre-built HTTP/1.1 requests written
on a raw asyncio stream, responses read by ``content-length``. Every loop here is bounded in time and in
count, and every connection goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench.gateway_throughput import CpuMeter, gateway_pid, http_request

LABEL_SET = "load"
SCORE_TOLERANCE = 1e-4
RSS_GROWTH_LIMIT = 0.10  # RSS at the end of the load over RSS after the warm-up, less one
MAX_REQUESTS_PER_CLIENT = 1_000_000  # a count bound on every client loop, beside its time bound
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)
_RETRY_AFTER = re.compile(rb"\r\nretry-after:\s*(\S+)", re.IGNORECASE)


# -- what is sent, and what each image must get ---------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One request the clients send: which images it carries (indices into the image list), in order."""

    images: tuple[int, ...]
    request: bytes  # the whole HTTP/1.1 request


Answer = dict[str, float]  # label -> score, for one image


def synthetic_images(count: int, labels: Sequence[str]) -> list[bytes]:
    """``count`` held-out synthetic images (PNG), each of a different class among ``labels``, so that the
    demo model's answers differ from image to image."""
    from tests.samples import WORLD, encode

    wanted = {WORLD.class_names.index(label) for label in labels}
    blobs, seen = [], set()
    for index in range(2000):
        image, _, label = WORLD.sample("eval", index)
        if label in wanted and label not in seen:
            seen.add(label)
            blobs.append(encode(image))
            if len(blobs) == count:
                return blobs
    raise ValueError(f"only {len(blobs)} distinct classes among {list(labels)}; asked for {count}")


def target(url: str) -> tuple[str, int]:
    """Host and port of ``url``, which must be on 127.0.0.1 (these drills never leave the machine)."""
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    if host != "127.0.0.1":
        raise ValueError(f"{url}: load drills only target 127.0.0.1")
    return host, int(port)


def classify_samples(url: str, blobs: Sequence[bytes], label_set: str, labels: Sequence[str]) -> list[Sample]:
    """Every image alone against the label set and against the same labels sent inline, and every
    neighbouring pair of images in one request (so that result order within a request is checked)."""
    host, port = target(url)
    encoded = [base64.b64encode(b).decode() for b in blobs]
    groups: list[tuple[tuple[int, ...], dict[str, Any]]] = []
    for i in range(len(blobs)):
        pair = (i, (i + 1) % len(blobs))
        groups += [((i,), {"label_set": label_set}), ((i,), {"labels": list(labels)})]
        groups.append((pair, {"label_set": label_set}))
    samples = []
    for images, choice in groups:
        body = json.dumps({"images": [encoded[i] for i in images], **choice}).encode()
        samples.append(Sample(images, http_request(host, port, "/v1/classify", body)))
    return samples


def reference_answers(url: str, blobs: Sequence[bytes], label_set: str) -> list[Answer]:
    """Each image's answer from a single request to an otherwise idle gateway."""
    import httpx

    answers = []
    for blob in blobs:
        body = {"images": [base64.b64encode(blob).decode()], "label_set": label_set}
        response = httpx.post(f"{url}/v1/classify", json=body, timeout=30)
        response.raise_for_status()
        answers.append({p["label"]: p["score"] for p in response.json()["results"][0]["predictions"]})
    return answers


@dataclass(frozen=True)
class Workload:
    labels: list[str]
    blobs: list[bytes]  # the distinct images
    answers: list[Answer]  # each image's answer on the idle gateway
    samples: list[Sample]  # the requests to send


def prepare(url: str, images: int = 8) -> Workload:
    """Register the label set, render ``images`` images, take their answers from the idle gateway, and
    build the requests. The images' top labels must all differ."""
    import httpx

    from tests.samples import LABELS

    httpx.put(f"{url}/v1/label-sets/{LABEL_SET}", json={"labels": LABELS}, timeout=60).raise_for_status()
    blobs = synthetic_images(images, LABELS)
    answers = reference_answers(url, blobs, LABEL_SET)
    tops = [max(a, key=a.__getitem__) for a in answers]
    if len(set(tops)) != len(tops):
        raise RuntimeError(f"the images' top labels are not all different: {tops}")
    return Workload(list(LABELS), blobs, answers, classify_samples(url, blobs, LABEL_SET, LABELS))


def is_wrong(body: bytes, images: Sequence[int], answers: Sequence[Answer]) -> bool:
    """Whether a 200 response fails to give each of ``images`` its own answer."""
    try:
        results = json.loads(body)["results"]
    except (ValueError, KeyError):
        return True
    if len(results) != len(images):
        return True
    for result, image in zip(results, images, strict=True):
        want = answers[image]
        got = {p["label"]: p["score"] for p in result["predictions"]}
        if got.keys() != want.keys() or result["predictions"][0]["label"] != max(want, key=want.__getitem__):
            return True
        if any(abs(got[label] - score) > SCORE_TOLERANCE for label, score in want.items()):
            return True
    return False


# -- the clients ----------------------------------------------------------------------------------


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


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
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
        options: dict[str, Any] = {}
        try:
            import uvloop

            options["loop_factory"] = uvloop.new_event_loop
        except ImportError:
            pass
        try:
            with asyncio.Runner(**options) as runner:
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
                    reply = await asyncio.wait_for(_read_response(reader), self.timeout_s)
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


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def sequential(url: str, work: Workload, count: int) -> list[Outcome]:
    """``count`` requests one after another on one connection (single-image samples only)."""
    singles = [s for s in work.samples if len(s.images) == 1]
    with Load(url, singles, work.answers, clients=1, seconds=60, max_requests=count) as load:
        load.wait()
    return load.outcomes


# -- figures --------------------------------------------------------------------------------------


def percentile_ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if len(values) else float("nan")


def summarize(outcomes: Sequence[Outcome], since: float, until: float) -> dict[str, Any]:
    """Figures over the outcomes that finished in ``[since, until)``."""
    window = [o for o in outcomes if since <= o.finished < until]
    ok = [o for o in window if o.status == 200]
    refused = [o for o in window if o.status == 429]
    seconds = min(until, max((o.finished for o in window), default=since)) - since or float("nan")
    statuses: dict[str, int] = {}
    for o in window:
        key = str(o.status) if o.status else o.failure
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "window_s": seconds,
        "requests": len(window),
        "ok": len(ok),
        "requests_per_s": len(ok) / seconds,
        "images_per_s": sum(o.images for o in ok) / seconds,
        "p50_ms": percentile_ms([o.latency for o in ok], 50),
        "p99_ms": percentile_ms([o.latency for o in ok], 99),
        "max_ms": percentile_ms([o.latency for o in ok], 100),
        "http_5xx": sum(o.status >= 500 for o in window),
        "wrong": sum(o.wrong for o in ok),
        "no_response": sum(o.status == 0 for o in window),
        "overloaded": len(refused),
        "overloaded_p50_ms": percentile_ms([o.latency for o in refused], 50),
        "overloaded_p99_ms": percentile_ms([o.latency for o in refused], 99),
        "statuses": statuses,
    }


# -- the drills -----------------------------------------------------------------------------------


def load_drill(
    url: str, work: Workload, clients: int, seconds: float, warmup_s: float, pid: int
) -> dict[str, Any]:
    """``clients`` clients for ``warmup_s + seconds``; figures over the last ``seconds``, RSS at the
    warm-up's end and at the end."""
    load = Load(url, work.samples, work.answers, clients, warmup_s + seconds, pid=pid)
    with CpuMeter(pid) as cpu, load:
        load.wait()
    begin, end = load.started + warmup_s, load.started + warmup_s + seconds
    figures = summarize(load.outcomes, begin, end)
    warm, last = load.rss_at(begin), load.rss_at(end)
    figures |= {
        "clients": clients,
        "warmup_s": warmup_s,
        "rss_warm_mb": warm / 2**20,
        "rss_end_mb": last / 2**20,
        "rss_max_mb": max(r for t, r in load.rss if t <= end) / 2**20,
        "rss_growth": last / warm - 1,
        "all_outcomes": summarize(load.outcomes, load.started, float("inf"))["statuses"],
        "gateway_cores": cpu.gateway_cores,
        "client_cores": cpu.own_cores,
        "other_cores": cpu.other_cores,
    }
    return figures


def load_failures(figures: dict[str, Any]) -> list[str]:
    """What a load run got wrong (empty when it passed)."""
    failures = []
    if figures["ok"] == 0:
        failures.append("no successful request")
    if figures["http_5xx"]:
        failures.append(f"{figures['http_5xx']} responses with status 5xx")
    if figures["wrong"]:
        failures.append(f"{figures['wrong']} responses with answers that are not their images' own")
    others = {k: v for k, v in figures["all_outcomes"].items() if k != "200"}
    if others:
        failures.append(f"requests that did not get a 200: {others}")
    if figures["rss_growth"] > RSS_GROWTH_LIMIT:
        failures.append(
            f"RSS grew {figures['rss_growth']:.1%} after the warm-up "
            f"({figures['rss_warm_mb']:.0f} -> {figures['rss_end_mb']:.0f} MB; limit {RSS_GROWTH_LIMIT:.0%})"
        )
    return failures


def overload_phase(
    url: str, work: Workload, clients: int, seconds: float, pid: int, honour_retry_after: bool
) -> dict[str, Any]:
    """``clients`` clients for ``seconds``, starting over its first fifth (at most 1 s): a flood (each
    sends again at once after a 429) or polite clients (each waits as the 429's ``Retry-After`` says)."""
    ramp = min(1.0, seconds / 5)
    load = Load(url, work.samples, work.answers, clients, seconds, pid=pid, sample_s=0.2, ramp_s=ramp,
                honour_retry_after=honour_retry_after)  # fmt: skip
    with CpuMeter(pid) as cpu, load:
        load.wait()
    figures = summarize(load.outcomes, load.started, float("inf"))
    refusals = [o for o in load.outcomes if o.status == 429]
    first_half = [r for t, r in load.rss if t < load.started + seconds / 2]
    return figures | {
        "clients": clients,
        "honour_retry_after": honour_retry_after,
        "overloaded_codes": sorted({o.code for o in refusals}),
        "overloaded_retry_after": sorted({o.retry_after for o in refusals}),
        "rss_first_half_max_mb": max(first_half) / 2**20,
        "rss_max_mb": max(r for _, r in load.rss) / 2**20,
        "rss_end_mb": load.rss[-1][1] / 2**20,
        "gateway_cores": cpu.gateway_cores,
        "client_cores": cpu.own_cores,
        "other_cores": cpu.other_cores,
    }


PHASES = {"polite": True, "flood": False}  # name -> honour Retry-After


def overload_drill(
    url: str, work: Workload, clients: int, seconds: float, pid: int, probes: int = 30, warmup_s: float = 2.0
) -> dict[str, Any]:
    """A warm-up (8 clients for ``warmup_s``), single requests to the idle gateway (``probes``), then
    ``clients`` polite clients for ``seconds``, then a flood of ``clients`` for ``seconds``, then single
    requests again."""
    with Load(url, work.samples, work.answers, min(clients, 8), warmup_s) as warmup:
        warmup.wait()
    before = sequential(url, work, probes)
    rss_before = rss_bytes(pid)
    phases = {
        name: overload_phase(url, work, clients, seconds, pid, polite) for name, polite in PHASES.items()
    }
    after = sequential(url, work, probes)
    return {
        "clients": clients,
        "seconds": seconds,
        "idle_p50_ms_before": percentile_ms([o.latency for o in before if o.status == 200], 50),
        "idle_p50_ms_after": percentile_ms([o.latency for o in after if o.status == 200], 50),
        "idle_statuses": sorted({o.status for o in before + after}),
        "idle_wrong": sum(o.wrong for o in before + after),
        "rss_before_mb": rss_before / 2**20,
        "warmup_statuses": summarize(warmup.outcomes, warmup.started, float("inf"))["statuses"],
        "phases": phases,
    }


OVERLOAD_RSS_GROWTH = 0.10  # RSS at the end of a phase over the highest in its first half, less one
OVERLOAD_RSS_ENVELOPE = 0.25  # the highest RSS while overloaded over the RSS before, less one
RECOVERY_FACTOR = 3.0  # idle p50 after the overload may be this many times the one before (+ 5 ms)
POLITE_FACTOR = 5.0  # with polite clients, 429 p50 may be this many times the idle p50 (+ 20 ms)


def overload_failures(figures: dict[str, Any]) -> list[str]:
    """What an overload run got wrong (empty when it passed). The factors are generous: this machine is
    shared, and the load generator runs on the gateway's cores."""
    failures = []
    idle = figures["idle_p50_ms_before"]
    for name, phase in figures["phases"].items():
        if not phase["overloaded"]:
            failures.append(f"{name}: no request got a 429: the load never reached the queue's bound")
        if phase["http_5xx"] or phase["no_response"] or phase["wrong"]:
            failures.append(
                f"{name}: 5xx {phase['http_5xx']}, no response {phase['no_response']}, wrong {phase['wrong']}"
            )
        if phase["overloaded_codes"] not in ([], ["overloaded"]):
            failures.append(f"{name}: 429 error codes {phase['overloaded_codes']}, expected ['overloaded']")
        if not all(value.isdigit() and int(value) >= 1 for value in phase["overloaded_retry_after"]):
            failures.append(f"{name}: 429s with Retry-After {phase['overloaded_retry_after']}")
        if phase["rss_end_mb"] > (1 + OVERLOAD_RSS_GROWTH) * phase["rss_first_half_max_mb"]:
            failures.append(
                f"{name}: RSS grew through the overload: {phase['rss_first_half_max_mb']:.0f} MB in its "
                f"first half, {phase['rss_end_mb']:.0f} MB at its end"
            )
    highest = max(phase["rss_max_mb"] for phase in figures["phases"].values())
    if highest > (1 + OVERLOAD_RSS_ENVELOPE) * figures["rss_before_mb"]:
        failures.append(
            f"RSS rose from {figures['rss_before_mb']:.0f} MB to {highest:.0f} MB while overloaded"
        )
    polite, flood = figures["phases"].get("polite"), figures["phases"].get("flood")
    if polite and polite["overloaded_p50_ms"] > POLITE_FACTOR * idle + 20:
        failures.append(
            f"polite: 429s took {polite['overloaded_p50_ms']:.0f} ms (p50); an idle request {idle:.1f} ms"
        )
    if flood and flood["ok"] and not flood["overloaded_p50_ms"] < flood["p50_ms"]:
        failures.append(
            f"flood: 429s ({flood['overloaded_p50_ms']:.0f} ms p50) were not faster than served requests "
            f"({flood['p50_ms']:.0f} ms p50): rejected requests must not wait for the queue"
        )
    if figures["idle_statuses"] != [200] or figures["idle_wrong"]:
        failures.append(
            f"single requests: statuses {figures['idle_statuses']}, wrong {figures['idle_wrong']}"
        )
    after = figures["idle_p50_ms_after"]
    if after > RECOVERY_FACTOR * idle + 5:
        failures.append(
            f"latency did not recover: p50 {idle:.1f} ms before the overload, {after:.1f} ms after"
        )
    return failures


# -- the command ----------------------------------------------------------------------------------


def _table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _cores(figures: dict[str, Any]) -> tuple[str, str]:
    return (
        "CPU cores: gateway / client / other",
        f"{figures['gateway_cores']:.2f} / {figures['client_cores']:.2f} / {figures['other_cores']:.2f}",
    )


def _served(figures: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("clients", f"{figures['clients']}"),
        ("requests answered 200", f"{figures['ok']:,} ({figures['requests_per_s']:.1f}/s)"),
        ("images/s", f"{figures['images_per_s']:.1f}"),
        ("latency p50 / p99 (ms)", f"{figures['p50_ms']:.1f} / {figures['p99_ms']:.1f}"),
        ("5xx responses", f"{figures['http_5xx']}"),
        ("wrong answers", f"{figures['wrong']}"),
        ("no response (transport)", f"{figures['no_response']}"),
        ("outcomes", json.dumps(figures["statuses"])),
    ]


def print_load(figures: dict[str, Any]) -> None:
    _table([
        *_served(figures),
        ("RSS after warm-up / end (MB)", f"{figures['rss_warm_mb']:.1f} / {figures['rss_end_mb']:.1f}"),
        ("RSS growth (limit 10%)", f"{figures['rss_growth']:+.1%}"),
        _cores(figures),
    ])  # fmt: skip


def print_overload(figures: dict[str, Any]) -> None:
    for name, phase in figures["phases"].items():
        how = "wait as Retry-After says" if phase["honour_retry_after"] else "send again at once"
        print(f"-- {name}: {phase['clients']} clients for {figures['seconds']:g} s; after a 429 they {how}")
        _table([
            *_served(phase),
            ("429 responses", f"{phase['overloaded']:,}"),
            ("429 latency p50 / p99 (ms)",
             f"{phase['overloaded_p50_ms']:.1f} / {phase['overloaded_p99_ms']:.1f}"),
            ("429 codes / Retry-After", f"{phase['overloaded_codes']} / {phase['overloaded_retry_after']}"),
            ("RSS first half max / max / end (MB)",
             f"{phase['rss_first_half_max_mb']:.0f} / {phase['rss_max_mb']:.0f} / "
             f"{phase['rss_end_mb']:.0f}"),
            _cores(phase),
        ])  # fmt: skip
    print("-- single requests on the idle gateway")
    _table([
        ("p50 before / after the overload (ms)",
         f"{figures['idle_p50_ms_before']:.1f} / {figures['idle_p50_ms_after']:.1f}"),
        ("RSS before the overload (MB)", f"{figures['rss_before_mb']:.0f}"),
    ])  # fmt: skip


def main(
    clients: Annotated[int, typer.Option(help="concurrent closed-loop clients", min=1)] = 64,
    seconds: Annotated[
        float, typer.Option(help="measured seconds (per phase with --overload)", min=1)
    ] = 60.0,
    warmup: Annotated[float, typer.Option(help="warm-up seconds, not measured", min=0)] = 10.0,
    images: Annotated[int, typer.Option(help="distinct images (2..10)", min=2, max=10)] = 8,
    overload: Annotated[
        bool, typer.Option(help="the overload drill instead (with e.g. --clients 256 --max-queue-images 8)")
    ] = False,
    max_queue_images: Annotated[int, typer.Option(help="the gateway's LIT_MAX_QUEUE_IMAGES", min=1)] = 512,
    out: Annotated[Path | None, typer.Option(help="also write the figures to <out>/load.json")] = None,
) -> None:
    """Start a gateway on the committed demo model (embedded ONNX Runtime) and drive it from 127.0.0.1;
    print the figures; exit 1 when a check fails."""
    from tests.gateway_server import running_gateway

    with (
        tempfile.TemporaryDirectory(prefix="bench-load-") as work,
        running_gateway(Path(work), LIT_MAX_QUEUE_IMAGES=str(max_queue_images)) as url,
    ):
        work = prepare(url, images)
        pid = gateway_pid()
        if overload:
            figures = overload_drill(url, work, clients, seconds, pid)
            failures = overload_failures(figures)
            print_overload(figures)
        else:
            figures = load_drill(url, work, clients, seconds, warmup, pid)
            failures = load_failures(figures)
            print_load(figures)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        name = "overload.json" if overload else "load.json"
        (out / name).write_text(json.dumps({**figures, "failures": failures}, indent=2))
    for failure in failures:
        print(f"FAILED: {failure}")
    if failures:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
