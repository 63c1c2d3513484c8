"""The CPU benchmark suite, one module after another on this machine, into one results folder.

``python -m bench`` (about 17 minutes on 2 cores) writes ``bench/results/``: each benchmark's Markdown,
JSON and PNG, and ``README.md`` linking them. ``python -m bench --tiny`` runs every benchmark at a tiny
size (what CI does, to prove they still work; its figures mean nothing).
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from bench.report import RESULTS, machine

SUITE = {
    "gateway_throughput": "Gateway vs the raw image encoder (images/s, latency)",
    "pipeline": "Gateway vs the transformers pipeline (per-image latency, 10 to 1,000 labels)",
    "label_encoding": "Label-set registration vs the raw text encoder (prompts/s)",
    "cpu_int8": "int8 encoders vs fp32: classify and label registration, raw and through the gateway",
    "training": "LiT training with and without the locked-feature cache (steps/s)",
    "footprint": "Gateway start-up time and memory",
    "kserve_protocols": "Open Inference Protocol: HTTP JSON vs HTTP binary vs gRPC (latency, requests/s)",
}


def main(
    tiny: Annotated[bool, typer.Option(help="every benchmark at a tiny size (a smoke test)")] = False,
    out: Annotated[Path, typer.Option(help="results folder")] = RESULTS,
    only: Annotated[list[str] | None, typer.Option(help="run only these benchmarks")] = None,
) -> None:
    chosen = only or list(SUITE)
    unknown = sorted(set(chosen) - set(SUITE))
    if unknown:
        raise typer.BadParameter(f"unknown benchmarks {unknown}; choose from {list(SUITE)}")
    lines = ["# Benchmark results", "", f"Command: `python -m bench{' --tiny' if tiny else ''}`.", ""]
    lines += ["| benchmark | what | took (s) |", "|---|---|---|"]
    began = time.perf_counter()
    for name in chosen:
        started = time.perf_counter()
        result = importlib.import_module(f"bench.{name}").run(out, tiny=tiny)
        took = time.perf_counter() - started
        lines.append(f"| [{name}]({Path(result).name}) | {SUITE[name]} | {took:.0f} |")
    lines += ["", f"Whole suite: {time.perf_counter() - began:.0f} s.", ""]
    lines.append("Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    lines += ["", gpu_status(Path(out) / "gpu")]
    (Path(out) / "README.md").write_text("\n".join(lines) + "\n")
    print(f"results in {out}")


if __name__ == "__main__":
    typer.run(main)


def gpu_status(folder: Path) -> str:
    """The GPU results' line of the index: a link to the last H200 run, or that there is none yet."""
    checks = folder / "checks.json"
    if checks.is_file() and json.loads(checks.read_text()).get("gpu"):
        return "GPU (scripts/gpu_check.sh on an H200): [checks](gpu/checks.md), [benchmarks](gpu/README.md)."
    return (
        "GPU: **no H200 run yet.** `bash scripts/gpu_check.sh` (the offline kit; wheels from "
        "`scripts/gpu_wheelhouse.sh`) writes `gpu/` on one; CI runs its CPU smoke test only."
    )
