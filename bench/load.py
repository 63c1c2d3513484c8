"""Load drills against a real gateway process as a command: sustained load, and overload.

*Load* (``python -m bench.load --clients 64 --seconds 60``): a gateway on the committed demo model
(embedded ONNX Runtime) and closed-loop clients sending ``POST /v1/classify`` with one or two of a few
distinct synthetic images; every response must give each of its images that image's own answer (scores
within ``1e-4``). Reported: requests and images/s, latency p50/p99, 5xx and other statuses, wrong
answers, transport failures, and the gateway's RSS after the warm-up and at the end (which must stay
within 10%). Exit status 1 when a check fails.

*Overload* (``python -m bench.load --overload --clients 256 --seconds 10 --max-queue-images 8``): a
gateway with a small ``LIT_MAX_QUEUE_IMAGES`` and far more clients than it can serve, polite clients
(they honour ``Retry-After``) then a flood; fast 429s, no 5xx, bounded RSS, and recovery afterwards.

The drills, their clients and their checks are :mod:`harness.drills` (the tests run the same drills);
this module is the command and its report.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.drills import load_drill, load_failures, overload_drill, overload_failures
from harness.gateway import gateway_pid, running_gateway
from harness.workload import prepare

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
