"""Items 1, 2 and 4 of the suite on an NVIDIA GPU: CUDA and TensorRT execution providers, fp16 bundles.

``bash scripts/gpu_check.sh`` sets up ``.venv-h200`` (onnxruntime-gpu beside the machine's CuPy and CUDA
torch) and runs this after ``bench.gpu_checks``;
everything lands under ``bench/results/gpu/``, one folder per configuration, with an index. The runs
share one time budget (8 minutes by default): a run that would start after it is spent is listed as not
run, with the reason. ``--allow-cpu`` runs the same wiring on the CPU providers (a smoke test for CI).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.report import RESULTS, machine

# (folder, benchmark module, options for its run())
RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("gateway-cuda-fp32", "gateway_throughput", {"providers": ("cuda",)}),
    ("gateway-cuda-fp16", "gateway_throughput", {"providers": ("cuda",), "fp16": True}),
    ("gateway-tensorrt-fp16", "gateway_throughput", {"providers": ("tensorrt", "cuda"), "fp16": True}),
    ("pipeline-cuda-fp16", "pipeline", {"providers": ("cuda",), "device": "cuda", "fp16": True}),
    ("training-cuda", "training", {"device": "cuda"}),
]


def _on_cpu(options: dict[str, Any]) -> dict[str, Any]:
    """The same run on the CPU: providers -> cpu, device -> cpu (fp16 kept, it runs on the CPU too)."""
    moved = dict(options)
    if "providers" in moved:
        moved["providers"] = ("cpu",)
    if "device" in moved:
        moved["device"] = "cpu"
    return moved


def main(
    out: Annotated[Path, typer.Option(help="results folder")] = RESULTS / "gpu",
    budget_s: Annotated[float, typer.Option(help="time for all runs together")] = 480.0,
    tiny: Annotated[bool, typer.Option(help="tiny sizes (smoke test)")] = False,
    allow_cpu: Annotated[bool, typer.Option(help="no GPU: run the wiring on CPU providers")] = False,
) -> None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available and not allow_cpu:
        raise typer.BadParameter(
            f"ONNX Runtime has no CUDA provider here ({', '.join(available)}): run scripts/gpu_check.sh on a "
            "machine with an NVIDIA GPU (it installs onnxruntime-gpu), or pass --allow-cpu for a smoke test"
        )
    began = time.monotonic()
    lines = ["# GPU benchmark results", "", "Command: `python -m bench.gpu`.", ""]
    lines += ["| run | benchmark | options | outcome | took (s) |", "|---|---|---|---|---|"]
    for folder, module, options in RUNS:
        chosen = options if not allow_cpu else _on_cpu(options)
        shown = ", ".join(f"{k}={v}" for k, v in chosen.items())
        if time.monotonic() - began > budget_s:
            lines.append(
                f"| {folder} | {module} | {shown} | not run: the {budget_s:.0f} s budget was spent | 0 |"
            )
            continue
        started = time.monotonic()
        try:
            result = importlib.import_module(f"bench.{module}").run(out / folder, tiny=tiny, **chosen)
            outcome = f"[results]({folder}/{Path(result).name})"
        except (
            Exception
        ) as exc:  # one failed configuration (e.g. no TensorRT libraries) must not stop the rest
            outcome = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        lines.append(f"| {folder} | {module} | {shown} | {outcome} | {time.monotonic() - started:.0f} |")
    lines += ["", f"Total: {time.monotonic() - began:.0f} s.", ""]
    lines.append("Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
