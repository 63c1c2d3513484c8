"""Benchmark: does the Open Inference Protocol over gRPC pay, against the same protocol over HTTP?

One gateway process on the committed demo model serves both (``LIT_GRPC_PORT``), and Triton's own Python
clients call zero-shot classification (``lit_demo``) three ways:

- ``http-json``: ``tritonclient.http`` with every tensor in the JSON (images base64) and the scores back as
  JSON numbers;
- ``http-binary``: ``tritonclient.http`` with the binary tensor data extension both ways (its default);
- ``grpc``: ``tritonclient.grpc`` (``raw_input_contents`` / ``raw_output_contents`` over HTTP/2).

Two request shapes, 1 image x 10 labels and 16 images x 10 labels (JPEG photos, 640x480, about 40 KB each;
the labels are cached by the warm-up, so the text encoder stays idle), each from one sequential client and
from 8 concurrent clients (threads, one client object each). Every call builds its request from the raw
image bytes (base64 for JSON) and reads the scores into numpy inside the timed span, as an application
would. Figures: latency median and p95 per request, requests/s (completed / wall time), and the CPU
milliseconds per request of the gateway process and of the client process (from ``/proc``).

Cells run in rounds, every mode once per round in a rotated order, so that drift on a shared machine hits
all modes alike. The clients share the machine's cores with the gateway, so their CPU cost is part of the
figures (as it is on any box that runs both). Batching wait is 2 ms (``LIT_MAX_BATCH_WAIT_MS``), as in
gateway_throughput: closed-loop clients queue up by themselves.

Run: ``.venv/bin/python -m bench.kserve_protocols [--tiny] [--out DIR]`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import base64
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench.report import RESULTS, Table, write_result
from harness.images import LABELS, photo_jpegs
from harness.usage import CpuMeter

MODES = ("http-json", "http-binary", "grpc")
MODEL = "lit_demo"
BATCH_WAIT_MS = 2.0

Call = Callable[[list[bytes]], np.ndarray]


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: float  # per cell and round
    warmup: int  # requests per mode and shape before measuring
    image_size: tuple[int, int]
    shapes: tuple[int, ...] = (1, 16)  # images per request
    concurrency: tuple[int, ...] = (1, 8)


FULL = Plan(rounds=2, seconds=4.0, warmup=3, image_size=(640, 480))
TINY = Plan(rounds=1, seconds=0.3, warmup=1, image_size=(96, 72), shapes=(1, 4), concurrency=(1, 2))


def caller(mode: str, http: str, grpc: str) -> tuple[Call, Callable[[], None]]:
    """A function that classifies images against :data:`LABELS` by ``mode``, and one that closes its client
    (each thread makes its own: tritonclient's clients are not meant to be shared across threads)."""
    if mode == "grpc":
        import tritonclient.grpc as grpcclient

        client: Any = grpcclient.InferenceServerClient(url=grpc)
        labels = np.array([s.encode() for s in LABELS], dtype=np.object_)

        def call_grpc(blobs: list[bytes]) -> np.ndarray:
            inputs = [grpcclient.InferInput("images", [len(blobs)], "BYTES"),
                      grpcclient.InferInput("labels", [len(LABELS)], "BYTES")]  # fmt: skip
            inputs[0].set_data_from_numpy(np.array(blobs, dtype=np.object_))
            inputs[1].set_data_from_numpy(labels)
            scores: np.ndarray = client.infer(MODEL, inputs).as_numpy("scores")
            return scores

        return call_grpc, client.close

    import tritonclient.http as httpclient

    binary = mode == "http-binary"
    client = httpclient.InferenceServerClient(url=http, connection_timeout=120, network_timeout=120)
    label_values = [s.encode() for s in LABELS] if binary else list(LABELS)

    def call_http(blobs: list[bytes]) -> np.ndarray:
        images = blobs if binary else [base64.b64encode(b).decode() for b in blobs]  # JSON: base64 strings
        inputs = [httpclient.InferInput("images", [len(blobs)], "BYTES"),
                  httpclient.InferInput("labels", [len(LABELS)], "BYTES")]  # fmt: skip
        inputs[0].set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=binary)
        inputs[1].set_data_from_numpy(np.array(label_values, dtype=np.object_), binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("scores", binary_data=binary)]
        scores: np.ndarray = client.infer(MODEL, inputs, outputs=outputs).as_numpy("scores")
        return scores

    return call_http, client.close


def request_bytes(mode: str, blobs: list[bytes]) -> int:
    """The bytes of one request's body (HTTP) or message (gRPC), as tritonclient builds them."""
    if mode == "grpc":
        import tritonclient.grpc as grpcclient
        from tritonclient.grpc._utils import _get_inference_request

        inputs = [grpcclient.InferInput("images", [len(blobs)], "BYTES"),
                  grpcclient.InferInput("labels", [len(LABELS)], "BYTES")]  # fmt: skip
        inputs[0].set_data_from_numpy(np.array(blobs, dtype=np.object_))
        inputs[1].set_data_from_numpy(np.array([s.encode() for s in LABELS], dtype=np.object_))
        message = _get_inference_request(MODEL, inputs, "", "", None, 0, False, False, 0, None, None)
        return int(message.ByteSize())
    import tritonclient.http as httpclient

    binary = mode == "http-binary"
    images = blobs if binary else [base64.b64encode(b).decode() for b in blobs]
    inputs = [httpclient.InferInput("images", [len(blobs)], "BYTES"),
              httpclient.InferInput("labels", [len(LABELS)], "BYTES")]  # fmt: skip
    inputs[0].set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=binary)
    inputs[1].set_data_from_numpy(np.array(LABELS, dtype=np.object_), binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("scores", binary_data=binary)]
    body, _ = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return len(body)


@dataclass
class Cell:
    """One mode, request shape and concurrency, summed over the rounds."""

    mode: str
    images: int
    clients: int
    latencies_s: list[float]
    wall_s: float = 0.0
    errors: int = 0
    gateway_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    def figures(self) -> dict[str, Any]:
        done = len(self.latencies_s)
        ms = sorted(1000 * t for t in self.latencies_s)
        return {
            "mode": self.mode, "images": self.images, "clients": self.clients, "requests": done,
            "errors": self.errors, "p50_ms": statistics.median(ms) if ms else 0.0,
            "p95_ms": ms[min(done - 1, int(0.95 * done))] if ms else 0.0,
            "requests_per_s": done / self.wall_s if self.wall_s else 0.0,
            "images_per_s": done * self.images / self.wall_s if self.wall_s else 0.0,
            "gateway_cpu_ms": 1000 * self.gateway_cpu_s / done if done else 0.0,
            "client_cpu_ms": 1000 * self.client_cpu_s / done if done else 0.0,
        }  # fmt: skip


def run_cell(cell: Cell, http: str, grpc: str, blobs: list[bytes], seconds: float, pid: int) -> None:
    """``cell.clients`` closed-loop clients for ``seconds``; latencies, errors, wall and CPU time added."""
    lock = threading.Lock()

    def client(index: int) -> None:
        call, close = caller(cell.mode, http, grpc)
        try:
            call(blobs[: cell.images])  # connect outside the measured span
            start.wait()
            request = index
            while time.perf_counter() < deadline:
                chosen = [blobs[(request + i) % len(blobs)] for i in range(cell.images)]
                began = time.perf_counter()
                try:
                    call(chosen)
                except Exception:
                    with lock:
                        cell.errors += 1
                    continue
                with lock:
                    cell.latencies_s.append(time.perf_counter() - began)
                request += cell.clients
        finally:
            close()

    meter = CpuMeter(pid)
    deadline = float("inf")

    def begin() -> None:  # once every client has connected, before any is released
        nonlocal deadline
        meter.__enter__()
        deadline = time.perf_counter() + seconds

    start = threading.Barrier(cell.clients + 1, action=begin)
    with ThreadPoolExecutor(cell.clients) as pool:
        futures = [pool.submit(client, i) for i in range(cell.clients)]
        start.wait()
        for future in futures:
            future.result()
    meter.__exit__()
    cell.wall_s += meter.wall_s
    cell.gateway_cpu_s += meter.gateway_cores * meter.wall_s
    cell.client_cpu_s += meter.own_cores * meter.wall_s


def measure(plan: Plan, http: str, grpc: str, pid: int) -> tuple[list[Cell], dict[str, Any]]:
    """Every cell of ``plan`` against one gateway, and the checks that the three modes answer alike."""
    blobs = photo_jpegs(max(plan.shapes), plan.image_size, seed=3)
    agreement: dict[str, float] = {}
    sizes: dict[str, dict[str, int]] = {}
    for images in plan.shapes:
        reference = None
        for mode in MODES:
            call, close = caller(mode, http, grpc)
            try:
                for _ in range(plan.warmup):
                    scores = call(blobs[:images])
            finally:
                close()
            reference = scores if reference is None else reference
            agreement[f"{mode} {images}"] = float(np.abs(scores - reference).max())
            sizes.setdefault(mode, {})[str(images)] = request_bytes(mode, blobs[:images])
    cells = {(m, i, c): Cell(m, i, c, []) for i in plan.shapes for c in plan.concurrency for m in MODES}
    for round_ in range(plan.rounds):
        for images in plan.shapes:
            for clients in plan.concurrency:
                order = MODES[round_ % 3 :] + MODES[: round_ % 3]
                for mode in order:
                    run_cell(cells[mode, images, clients], http, grpc, blobs, plan.seconds, pid)
    checks = {"max_abs_diff_vs_http_json": agreement, "request_bytes": sizes,
              "image_bytes": [len(b) for b in blobs]}  # fmt: skip
    return list(cells.values()), checks


def run(out: Path = RESULTS, tiny: bool = False) -> Path:
    """Start a gateway with gRPC on the demo model, measure every cell, write
    ``<out>/kserve_protocols.{md,json,png}``."""
    from harness.gateway import free_port, gateway_pid, running_gateway

    plan = TINY if tiny else FULL
    threads = os.cpu_count() or 1
    grpc_port = free_port()
    settings = {
        "LIT_GRPC_PORT": str(grpc_port),
        "LIT_PROVIDERS": '["cpu"]',
        "LIT_INTRA_OP_THREADS": str(threads),
        "LIT_MAX_BATCH_WAIT_MS": f"{BATCH_WAIT_MS:g}",
    }
    began = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-protocols-") as tmp,
        running_gateway(Path(tmp), **settings) as url,
    ):
        cells, checks = measure(plan, url.removeprefix("http://"), f"127.0.0.1:{grpc_port}", gateway_pid())
    took = time.perf_counter() - began
    rows = [cell.figures() for cell in cells]
    figures = {"results": rows, "checks": checks, "plan": asdict(plan), "settings": settings, "tiny": tiny,
               "threads": threads, "seconds": took}  # fmt: skip
    tables = _tables(rows, checks, plan)
    summary = _summary(rows, plan, tiny)
    return write_result(out, "kserve_protocols", "Open Inference Protocol: HTTP JSON vs HTTP binary vs gRPC",
                        tables, figures, plot=_plot(rows, plan), summary=summary)  # fmt: skip


def _find(rows: list[dict[str, Any]], mode: str, images: int, clients: int) -> dict[str, Any]:
    return next(r for r in rows if (r["mode"], r["images"], r["clients"]) == (mode, images, clients))


def _tables(rows: list[dict[str, Any]], checks: dict[str, Any], plan: Plan) -> list[Table]:
    columns = [
        "request", "clients", "mode", "requests", "p50 (ms)", "p95 (ms)", "requests/s", "images/s",
        "gateway CPU ms/request", "client CPU ms/request", "requests/s vs http-binary", "errors",
    ]  # fmt: skip
    body = []
    for row in rows:
        base = _find(rows, "http-binary", row["images"], row["clients"])["requests_per_s"]
        body.append([
            f"{row['images']} x {len(LABELS)}", row["clients"], row["mode"], row["requests"], row["p50_ms"],
            row["p95_ms"], row["requests_per_s"], row["images_per_s"], row["gateway_cpu_ms"],
            row["client_cpu_ms"], f"{row['requests_per_s'] / base:.2f}x" if base else "-", row["errors"],
        ])  # fmt: skip
    sizes = checks["request_bytes"]
    size_rows = [[f"{n} x {len(LABELS)}", *(f"{sizes[m][str(n)]:,}" for m in MODES)] for n in plan.shapes]
    mean_kb = statistics.mean(checks["image_bytes"]) / 1024
    width, height = plan.image_size
    return [
        Table(
            title="Latency and throughput by protocol",
            columns=columns,
            rows=body,
            notes=[
                f"{plan.rounds} rounds x {plan.seconds:g} s per cell, modes in rotated order each round; "
                "latency per request as the client sees it, building the request and reading the scores "
                "included.",
                "CPU ms/request: CPU time of the gateway process and of this (client) process over the cell, "
                "per completed request; both share the machine's cores.",
            ],
        ),
        Table(
            title="Request size (bytes on the wire, before HTTP/2 or TCP framing)",
            columns=["request", *MODES],
            rows=size_rows,
            notes=[
                f"JPEG photos of {width}x{height}, {mean_kb:.0f} KB each on average; JSON carries them "
                "base64 (a third more)."
            ],
        ),
    ]


def _summary(rows: list[dict[str, Any]], plan: Plan, tiny: bool) -> list[str]:
    lines = []
    for images in plan.shapes:
        for clients in plan.concurrency:
            grpc, binary, json_ = (
                _find(rows, m, images, clients) for m in ("grpc", "http-binary", "http-json")
            )
            rate = grpc["requests_per_s"]
            lines.append(
                f"- **{images} x {len(LABELS)}, {clients} client{'s' if clients > 1 else ''}:** gRPC "
                f"{grpc['p50_ms']:.1f} ms median, {rate:.0f} requests/s; HTTP binary {binary['p50_ms']:.1f} "
                f"ms, {binary['requests_per_s']:.0f}/s; HTTP JSON {json_['p50_ms']:.1f} ms, "
                f"{json_['requests_per_s']:.0f}/s (gRPC {rate / binary['requests_per_s']:.2f}x HTTP binary, "
                f"{rate / json_['requests_per_s']:.2f}x HTTP JSON)."
            )
    if tiny:
        lines.append("- Tiny run (a smoke test): tiny images, short cells; the figures mean nothing.")
    return lines


def _plot(rows: list[dict[str, Any]], plan: Plan) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(i, c) for i in plan.shapes for c in plan.concurrency]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.27
    for offset, mode in zip((-width, 0, width), MODES, strict=True):
        cells = [_find(rows, mode, i, c) for i, c in groups]
        xs = [x + offset for x in range(len(groups))]
        left.bar(xs, [c["p50_ms"] for c in cells], width, label=mode)
        right.bar(xs, [c["requests_per_s"] for c in cells], width, label=mode)
    labels = [f"{i} img\n{c} client{'s' if c > 1 else ''}" for i, c in groups]
    for axis, title in (
        (left, "Median latency (ms, lower is better)"),
        (right, "Requests/s (higher is better)"),
    ):
        axis.set_xticks(range(len(groups)), labels)
        axis.set_title(title)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def main(
    tiny: Annotated[bool, typer.Option(help="tiny images, short cells (a smoke test)")] = False,
    out: Annotated[Path, typer.Option(help="results folder")] = RESULTS,
) -> None:
    run(out, tiny=tiny)


if __name__ == "__main__":
    typer.run(main)
