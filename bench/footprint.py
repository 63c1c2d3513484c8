"""Benchmark: gateway start-up time and resident memory, demo model and ViT-B/32 CLIP.

Each start spawns ``python -m service.cli`` (what ``lit-serve`` runs) and polls it every 20 ms: the time
from spawn to the first 200 on ``/readyz`` (interpreter, imports, the bundle read and checked against
its sha256 sums, both ONNX Runtime sessions created, server listening). The same process on an empty
repository (first 200 on ``/healthz``) separates the process's own start from the model's load.
Resident memory is read from ``/proc/<pid>/status``: ``VmRSS`` once ready and after a warm-up of
classify requests (single 1600x1200 JPEGs from several clients, so the batcher forms full batches and
ONNX Runtime's arena grows to its working size), and ``VmHWM``, the peak. Figures are the median of
several starts; the first start may read the model files from disk, later ones from the page cache
(all starts are listed in the JSON).

Run: ``.venv/bin/python -m bench.footprint [--tiny] [--out DIR]``.
"""

from __future__ import annotations

import base64
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.report import RESULTS, Table, write_result
from harness.gateway import free_port, gateway_environment, spawn_gateway, stop_process
from harness.images import photo_jpegs
from harness.usage import memory_kb

POLL_S = 0.02


@dataclass(frozen=True)
class Plan:
    starts: int
    warmup_requests: int
    warmup_clients: int
    labels: int


FULL = Plan(starts=3, warmup_requests=64, warmup_clients=16, labels=10)
TINY = Plan(starts=1, warmup_requests=8, warmup_clients=4, labels=5)


def memory_mb(pid: int) -> dict[str, float]:
    """``VmRSS`` (resident now) and ``VmHWM`` (peak resident) of ``pid`` in MiB."""
    kb = memory_kb(pid)
    return {key: kb[key] / 1024 for key in ("VmRSS", "VmHWM")}


@dataclass
class Started:
    url: str
    pid: int
    healthy_s: float  # spawn -> first 200 on /healthz
    ready_s: float  # spawn -> first 200 on /readyz


@contextmanager
def start_gateway(
    repository: Path, workdir: Path, threads: int, need_model: bool = True
) -> Iterator[Started]:
    """Spawn a gateway on ``repository``, wait until ready (only until it answers ``/healthz`` without
    ``need_model``), time it; stop it afterwards."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = gateway_environment(
        port,
        workdir,
        LIT_REPOSITORY=str(repository),
        LIT_INTRA_OP_THREADS=str(threads),
        LIT_PROVIDERS='["cpu"]',
    )
    log_path = workdir / f"gateway-{port}.log"
    with open(log_path, "w") as log, httpx.Client(timeout=1) as client:
        began = time.perf_counter()
        process = spawn_gateway(environment, workdir, log)
        try:
            healthy = ready = None
            while ready is None:
                if process.poll() is not None:
                    raise RuntimeError(f"gateway exited: {log_path.read_text()[-3000:]}")
                if time.perf_counter() - began > 120:
                    raise RuntimeError("gateway not ready within 120 s")
                try:
                    if healthy is None and client.get(f"{url}/healthz").status_code == 200:
                        healthy = time.perf_counter() - began
                    if healthy is not None and not need_model:
                        ready = healthy
                    elif healthy is not None and client.get(f"{url}/readyz").status_code == 200:
                        ready = time.perf_counter() - began
                except httpx.TransportError:
                    pass
                time.sleep(POLL_S)
            yield Started(url, process.pid, healthy, ready)
        finally:
            stop_process(process, 10)


def warm_up(url: str, blobs: list[bytes], labels: list[str], requests: int, clients: int) -> None:
    """``requests`` single-image classify calls from ``clients`` threads (labels inline, cached after the
    first)."""
    import httpx

    bodies = [{"images": [base64.b64encode(b).decode()], "labels": labels, "top_k": 1} for b in blobs]
    with httpx.Client(timeout=300) as client:
        client.post(f"{url}/v1/classify", json=bodies[0]).raise_for_status()  # encodes the labels once

        def call(i: int) -> None:
            client.post(f"{url}/v1/classify", json=bodies[i % len(bodies)]).raise_for_status()

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(call, range(requests)))


def baseline(plan: Plan, threads: int, work: Path) -> dict[str, Any]:
    """The gateway process with no model (an empty repository): interpreter, imports, app, server."""
    starts = []
    for index in range(plan.starts):
        folder = work / f"start-{index}"
        (folder / "empty").mkdir(parents=True)
        with start_gateway(folder / "empty", folder, threads, need_model=False) as started:
            rss = memory_mb(started.pid)
        starts.append(
            {"healthy_s": started.healthy_s, "rss_ready_mb": rss["VmRSS"], "peak_mb": rss["VmHWM"]}
        )  # fmt: skip
    median = {key: statistics.median(s[key] for s in starts) for key in starts[0]}
    return {"bundle": "(no model)", "starts": starts, "median": median, "onnx_mb": 0.0}


def measure(repository: Path, plan: Plan, threads: int, work: Path) -> dict[str, Any]:
    from bench.clip_model import benchmark_labels
    from lit_bundle.repository import load_bundle

    bundle = load_bundle(repository)
    blobs = photo_jpegs(4)
    labels = benchmark_labels(plan.labels)
    starts = []
    for index in range(plan.starts):
        folder = work / f"start-{index}"
        folder.mkdir(parents=True)
        with start_gateway(repository, folder, threads) as started:
            ready = memory_mb(started.pid)
            warm_up(started.url, blobs, labels, plan.warmup_requests, plan.warmup_clients)
            warmed = memory_mb(started.pid)
        starts.append(
            {
                "healthy_s": started.healthy_s,
                "ready_s": started.ready_s,
                "rss_ready_mb": ready["VmRSS"],
                "rss_warm_mb": warmed["VmRSS"],
                "peak_mb": warmed["VmHWM"],
            }
        )
    median = {key: statistics.median(s[key] for s in starts) for key in starts[0]}
    model_mb = sum(p.stat().st_size for p in (bundle.image_model, bundle.text_model)) / 2**20
    return {"bundle": bundle.manifest.name, "starts": starts, "median": median, "onnx_mb": model_mb}


def run(out: Path = RESULTS, tiny: bool = False, work: Path | None = None) -> Path:
    """Start the gateway on the demo bundle and on the ViT-B/32 CLIP (``clip_tiny`` with ``tiny``);
    write ``<out>/footprint.{md,json,png}``."""
    from bench.clip_model import CACHE, clip_bundle
    from harness.gateway import REPOSITORY

    plan = TINY if tiny else FULL
    threads = os.cpu_count() or 1
    _, clip_repository = clip_bundle(work or CACHE, tiny=tiny)
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        empty = baseline(plan, threads, Path(tmp) / "empty")
        demo = measure(REPOSITORY, plan, threads, Path(tmp) / "demo")
        clip = measure(clip_repository, plan, threads, Path(tmp) / "clip")
    results = [empty, demo, clip]
    base = empty["median"]["healthy_s"]
    for r in (demo, clip):  # the model's share of the start; clipped at 0 (tiny models: timing noise)
        r["median"]["model_s"] = max(0.0, r["median"]["ready_s"] - base)

    def row(r: dict[str, Any]) -> list[Any]:
        m = r["median"]
        if r is empty:
            return [
                r["bundle"],
                "-",
                m["healthy_s"],
                "-",
                m["rss_ready_mb"],
                "-",
                m["peak_mb"],
                len(r["starts"]),
            ]
        return [
            r["bundle"],
            r["onnx_mb"],
            m["ready_s"],
            m["model_s"],
            m["rss_ready_mb"],
            m["rss_warm_mb"],
            m["peak_mb"],
            len(r["starts"]),
        ]

    table = Table(
        title="Gateway start-up and resident memory (median of starts)",
        columns=["bundle", "ONNX files (MiB)", "spawn to ready (s)", "of which the model (s)",
                 "RSS ready (MiB)", f"RSS after {plan.warmup_requests} requests (MiB)", "peak RSS (MiB)",
                 "starts"],
        rows=[row(r) for r in results],
        notes=[
            f"Spawn of `python -m service.cli` to the first 200 on /readyz, polled every "
            f"{POLL_S * 1000:.0f} ms (CPU provider, {threads} intra-op threads). uvicorn runs the app's "
            "start-up, which loads the model (bundle verified against its sha256 sums, both ONNX Runtime "
            "sessions created), before it listens, so /healthz and /readyz answer together; the row "
            "'(no model)' is the same process on an empty repository (interpreter, imports, app, server: "
            "first 200 on /healthz), and 'of which the model' is the difference.",
            f"Warm-up: {plan.warmup_requests} single-image classify requests (1600x1200 JPEG, {plan.labels} "
            f"inline labels) from {plan.warmup_clients} concurrent clients. RSS = VmRSS, peak = VmHWM "
            "(/proc/<pid>/status).",
        ],
    )  # fmt: skip
    summary = [
        f"**Process alone (no model):** up {base:.1f} s after spawn, "
        f"{empty['median']['rss_ready_mb']:,.0f} MiB resident.",
    ]
    for r in (demo, clip):
        m = r["median"]
        summary.append(
            f"**{r['bundle']}:** ready {m['ready_s']:.1f} s after spawn ({m['model_s']:.1f} s for the "
            f"model), {m['rss_ready_mb']:,.0f} MiB resident when ready, {m['rss_warm_mb']:,.0f} MiB after "
            f"{plan.warmup_requests} requests (peak {m['peak_mb']:,.0f} MiB); its ONNX files are "
            f"{r['onnx_mb']:,.1f} MiB."
        )
    if tiny:
        summary.append("Tiny run (a smoke test): one start each, tiny CLIP; the figures mean little.")
    figures = {"results": results, "threads": threads, "tiny": tiny, "plan": plan.__dict__}
    return write_result(out, "footprint", "Gateway start-up time and memory", [table], figures,
                        plot=_plot(results), summary=summary)  # fmt: skip


def _plot(results: list[dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    empty, *models = results
    base = empty["median"]["healthy_s"]
    names = [r["bundle"] for r in results]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.barh(names, [base] * len(results), label="process, imports, server")
    left.barh(names[1:], [r["median"]["model_s"] for r in models], left=base, label="model load")
    left.set(xlabel="seconds from spawn to ready", title="Start-up (median)")
    left.legend(fontsize=8)
    width = 0.27
    ys = range(len(results))
    for offset, key, label in ((-width, "rss_ready_mb", "ready"), (0, "rss_warm_mb", "after warm-up"),
                               (width, "peak_mb", "peak")):  # fmt: skip
        right.barh(
            [y + offset for y in ys], [r["median"].get(key, 0.0) for r in results], height=width, label=label
        )
    right.set_yticks(list(ys), names)
    right.set(xlabel="MiB resident", title="Memory (median)")
    right.legend(fontsize=8)
    figure.tight_layout()
    return figure


def main(
    tiny: Annotated[bool, typer.Option(help="one start each, tiny CLIP (a smoke test)")] = False,
    out: Annotated[Path, typer.Option(help="results folder")] = RESULTS,
) -> None:
    run(out, tiny=tiny)


if __name__ == "__main__":
    typer.run(main)
