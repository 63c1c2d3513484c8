"""The GPU path's correctness checks, for one NVIDIA GPU machine (``scripts/gpu_check.sh`` runs them).

Each check passes or fails with its figures; together they prove what the GPU path promises:

- ``refusal``: an accelerator asked for whose libraries cannot load stops the gateway, naming them;
- ``sessions``: CUDA (and TensorRT, when its libraries are there) sessions really run on the device;
- ``parity``: the CLIP ViT-B/32-sized bundle's embeddings on the GPU equal the CPU's (1e-4) and so do
  its scores;
- ``handoff``: image embeddings stay on the GPU from the encoder to CuPy (IO binding) and equal a plain run;
- ``scoring``: CuPy scoring equals NumPy's at 10, 1,000 and 50,000 labels (and how long each takes);
- ``fp16``: the float16 bundle passes its export gate on the GPU (worst cosine to fp32 recorded);
- ``gateway``: the gateway end to end on CUDA with GPU scoring answers what the CPU reference answers.

``--allow-cpu`` runs the same code on the CPU providers at a tiny size (CI's smoke test: the wiring, not
the GPU). Results: ``checks.md`` and ``checks.json`` in ``--out``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench.report import RESULTS, machine

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@dataclass
class Context:
    gpu: bool  # False: the CPU smoke run
    tiny: bool
    work: Path
    repository: Path = field(init=False)
    photos: list[bytes] = field(default_factory=list)

    @property
    def accelerated(self) -> list[str]:
        return ["cuda"] if self.gpu else ["cpu"]


@dataclass
class Outcome:
    name: str
    passed: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _sessions(ctx: Context, providers: list[str]) -> Any:
    from lit_bundle.repository import load_bundle
    from service.onnx_backend import OnnxEncoders

    return OnnxEncoders(load_bundle(ctx.repository), providers, trt_cache_dir=ctx.work / "trt")


def _pixels(ctx: Context, count: int) -> np.ndarray:
    """The first ``count`` photos as the gateway decodes them."""
    from lit_bundle.repository import load_bundle
    from service.decode import DecodeLimits, decode_image

    spec = load_bundle(ctx.repository).manifest.preprocess
    return np.stack([decode_image(blob, spec, DecodeLimits()) for blob in ctx.photos[:count]])


def check_refusal(ctx: Context) -> Outcome:
    """Ask for a provider that cannot load (TensorRT without its libraries on a GPU machine; CUDA on a
    CPU-only ONNX Runtime) and expect start-up to stop with the reason."""
    import onnxruntime as ort

    wanted = "tensorrt" if ctx.gpu else "cuda"
    env = {
        **os.environ,
        "LIT_REPOSITORY": str(ctx.repository),
        "LIT_PROVIDERS": json.dumps([wanted]),
        "LIT_PORT": "0",
        "LIT_LABEL_STORE": str(ctx.work / "refusal-sets"),
        "LD_LIBRARY_PATH": "",  # TensorRT's libraries, when they came as a wheel, are found through it
    }
    if ctx.gpu and TRT not in ort.get_available_providers():
        return Outcome("refusal", False, "this onnxruntime has no TensorRT provider to be refused")
    done = subprocess.run(
        [sys.executable, "-m", "service.cli"], env=env, capture_output=True, text=True, timeout=300
    )
    text = done.stdout + done.stderr
    named = f"provider {wanted} was requested" in text
    passed = done.returncode != 0 and named
    reason = next((line for line in text.splitlines() if "was requested" in line), text[-300:])
    return Outcome("refusal", passed, f"exit {done.returncode}: {reason.strip()[:400]}")


def check_sessions(ctx: Context) -> Outcome:
    """The sessions run where they were asked to: providers, and device memory that grew."""
    before = _device_free()
    encoders = _sessions(ctx, ctx.accelerated)
    encoders.image.run(None, {"pixels": _pixels(ctx, 4)})
    used = None if before is None else before - (_device_free() or before)
    providers = encoders.providers()
    passed = providers[0] == (CUDA if ctx.gpu else CPU) and (not ctx.gpu or (used or 0) > 0)
    figures: dict[str, Any] = {"providers": providers, "device_bytes_used": used}
    if ctx.gpu and "TRT_LIBS" in os.environ:
        trt = _sessions(ctx, ["tensorrt"])
        trt.image.run(None, {"pixels": _pixels(ctx, 4)})
        figures["tensorrt_providers"] = trt.providers()
        passed = passed and trt.providers()[0] == TRT
    return Outcome("sessions", passed, f"providers {providers}, device memory used {used}", figures)


def _device_free() -> int | None:
    try:
        import cupy

        return int(cupy.cuda.runtime.memGetInfo()[0])
    except Exception:
        return None


def check_parity(ctx: Context) -> Outcome:
    """Image and text embeddings, and label scores, on the accelerator vs the CPU."""
    from service.scoring import Scorer

    pixels = _pixels(ctx, 16)
    cpu, device = _sessions(ctx, ["cpu"]), _sessions(ctx, ctx.accelerated)
    feeds = {"pixels": pixels}
    image_cpu, image_gpu = cpu.image.run(None, feeds)[0], device.image.run(None, feeds)[0]
    tokens = {"input_ids": np.ones((8, 8), np.int64), "attention_mask": np.ones((8, 8), np.int64)}
    text_cpu, text_gpu = cpu.text.run(None, tokens)[0], device.text.run(None, tokens)[0]
    labels = text_cpu / np.linalg.norm(text_cpu, axis=1, keepdims=True)
    scores_cpu = Scorer().probabilities(image_cpu, labels, 100.0, None, "softmax")
    scores_gpu = Scorer().probabilities(image_gpu, labels, 100.0, None, "softmax")
    diffs = {
        "image": float(np.abs(image_cpu - image_gpu).max()),
        "text": float(np.abs(text_cpu - text_gpu).max()),
        "scores": float(np.abs(scores_cpu - scores_gpu).max()),
    }
    passed = diffs["image"] <= 1e-4 and diffs["text"] <= 1e-4 and diffs["scores"] <= 1e-4
    return Outcome("parity", passed, ", ".join(f"{k} max diff {v:.2e}" for k, v in diffs.items()), diffs)


def check_handoff(ctx: Context) -> Outcome:
    """Image embeddings reach the scorer as device arrays (IO binding, no host copy), equal to a plain run."""
    import asyncio

    from service.device_handoff import to_host
    from service.scoring import gpu_array_module

    xp, why = gpu_array_module() if ctx.gpu else (np, "")
    if xp is None:
        return Outcome("handoff", False, f"no CuPy: {why}")
    encoders = _sessions(ctx, ctx.accelerated)
    pixels = _pixels(ctx, 8)
    plain = encoders.image.run(None, {"pixels": pixels})[0]
    if not encoders.keep_image_embeddings_on(xp):
        return Outcome(
            "handoff", False, f"{encoders.providers()[0]} would not bind its output for {xp.__name__}"
        )
    got = asyncio.run(encoders.encode_images(pixels))
    kind = type(got).__module__.split(".")[0]
    diff = float(np.abs(to_host(got) - plain).max())
    passed = diff <= 1e-6 and kind == ("cupy" if ctx.gpu else "numpy")
    return Outcome("handoff", passed, f"{kind} array, max diff to session.run {diff:.2e}", {"max_diff": diff})


def check_scoring(ctx: Context) -> Outcome:
    """CuPy vs NumPy scoring at 10, 1,000 and 50,000 labels: the same top-5 and probabilities."""
    from service.scoring import Scorer, gpu_array_module

    xp, why = gpu_array_module()
    if ctx.gpu and xp is None:
        return Outcome("scoring", False, f"no GPU scoring: {why}")
    device = Scorer.for_device("gpu", gpu=xp) if xp is not None else Scorer()
    rng = np.random.default_rng(0)
    rows, figures, passed = [], {}, True
    for count in (10, 1000, 50000 if not ctx.tiny else 5000):
        images = rng.normal(size=(8, 512)).astype(np.float32)
        labels = rng.normal(size=(count, 512)).astype(np.float32)
        labels /= np.linalg.norm(labels, axis=1, keepdims=True)
        want = Scorer().top_k(images, labels, 100.0, None, "softmax", 5)
        device.top_k(images, labels, 100.0, None, "softmax", 5, key=("check", count))  # upload once
        began = time.perf_counter()
        got = device.top_k(images, labels, 100.0, None, "softmax", 5, key=("check", count))
        took = (time.perf_counter() - began) * 1000
        same = np.array_equal(got[0], want[0]) and np.allclose(got[1], want[1], atol=1e-5)
        passed = passed and same
        figures[f"labels_{count}"] = {"same_top5": bool(same), "ms": round(took, 3)}
        rows.append(f"{count} labels: {'same' if same else 'DIFFERENT'} top-5, {took:.2f} ms")
    return Outcome("scoring", passed, f"on the {device.device}: " + "; ".join(rows), figures)


def check_fp16(ctx: Context) -> Outcome:
    """The float16 bundle: its export gate ran (on the GPU when there is one) and what it measured."""
    from bench.clip_model import clip_bundle
    from lit_bundle.repository import load_bundle

    _, repository = clip_bundle(ctx.work / "clip", tiny=ctx.tiny, fp16=True)
    manifest = load_bundle(repository).manifest
    figures = {k: v for k, v in manifest.metrics.items() if k.startswith("export_")}
    figures["checked_on"] = manifest.provenance.get("fp16_checked_on", "unknown")
    on_gpu = figures["checked_on"] != CPU
    return Outcome("fp16", on_gpu or not ctx.gpu, json.dumps(figures), figures)


def _classify(ctx: Context, providers: list[str], scoring: str, labels: list[str]) -> tuple[np.ndarray, dict]:
    import httpx

    from harness.gateway import running_gateway

    env = {
        "LIT_REPOSITORY": str(ctx.repository),
        "LIT_PROVIDERS": json.dumps(providers),
        "LIT_SCORING_DEVICE": scoring,
        "LIT_TRT_CACHE_DIR": str(ctx.work / "trt"),
    }
    body = {"images": [base64.b64encode(b).decode() for b in ctx.photos[:4]], "labels": labels}
    with running_gateway(ctx.work, **env) as url:
        answer = httpx.post(f"{url}/v1/classify", json=body, timeout=120).json()
        ready = httpx.get(f"{url}/readyz", timeout=10).json()
    scores = [
        [{p["label"]: p["score"] for p in r["predictions"]}[x] for x in labels] for r in answer["results"]
    ]
    return np.asarray(scores), ready


def check_gateway(ctx: Context) -> Outcome:
    """The gateway on the accelerator with GPU scoring answers what the gateway on the CPU answers."""
    labels = [f"label {i}" for i in range(50)]
    expected, _ = _classify(ctx, ["cpu"], "cpu", labels)
    served, ready = _classify(ctx, ctx.accelerated, "gpu" if ctx.gpu else "cpu", labels)
    diff = float(np.abs(served - expected).max())
    passed = diff <= 1e-4 and ready["providers"][0] == (CUDA if ctx.gpu else CPU)
    return Outcome(
        "gateway", passed, f"providers {ready['providers']}, max diff {diff:.2e}", {"max_diff": diff}
    )


CHECKS: list[Callable[[Context], Outcome]] = [
    check_refusal,
    check_sessions,
    check_parity,
    check_handoff,
    check_scoring,
    check_fp16,
    check_gateway,
]


def run_checks(ctx: Context) -> list[Outcome]:
    from bench.clip_model import clip_bundle
    from harness.images import photo_jpegs

    _, ctx.repository = clip_bundle(ctx.work / "clip", tiny=ctx.tiny)
    ctx.photos = photo_jpegs(16, size=(640, 480) if ctx.tiny else (1600, 1200))
    outcomes = []
    for check in CHECKS:
        began = time.monotonic()
        try:
            outcome = check(ctx)
        except Exception as exc:  # one broken check must not hide the others
            outcome = Outcome(check.__name__.removeprefix("check_"), False, f"{type(exc).__name__}: {exc}")
        outcome.seconds = round(time.monotonic() - began, 1)
        outcomes.append(outcome)
        print(f"{'PASS' if outcome.passed else 'FAIL'} {outcome.name}: {outcome.detail}", flush=True)
    return outcomes


def write(outcomes: list[Outcome], out: Path, gpu: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    about = machine()
    lines = [
        f"# GPU path checks ({'GPU' if gpu else 'CPU smoke run'})",
        "",
        "| check | result | detail | s |",
    ]
    lines += ["|---|---|---|---|"]
    lines += [
        f"| {o.name} | {'pass' if o.passed else 'FAIL'} | {o.detail.replace('|', '/')} | {o.seconds} |"
        for o in outcomes
    ]
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in about.items())]
    (out / "checks.md").write_text("\n".join(lines) + "\n")
    data = {"gpu": gpu, "machine": about, "checks": [asdict(o) for o in outcomes]}
    (out / "checks.json").write_text(json.dumps(data, indent=1, default=str))


def main(
    out: Annotated[Path, typer.Option(help="results folder")] = RESULTS / "gpu",
    work: Annotated[Path, typer.Option(help="scratch folder (bundles, engine caches)")] = ROOT
    / "bench"
    / ".cache",
    tiny: Annotated[bool, typer.Option(help="tiny sizes (smoke test)")] = False,
    allow_cpu: Annotated[bool, typer.Option(help="no GPU: run the wiring on the CPU providers")] = False,
) -> None:
    import onnxruntime as ort

    gpu = CUDA in ort.get_available_providers()
    if not gpu and not allow_cpu:
        raise typer.BadParameter(
            "ONNX Runtime has no CUDA provider here: run scripts/gpu_check.sh on an NVIDIA GPU machine, "
            "or pass --allow-cpu for the smoke run"
        )
    outcomes = run_checks(Context(gpu=gpu and not allow_cpu, tiny=tiny, work=work))
    write(outcomes, out, gpu and not allow_cpu)
    if not all(o.passed for o in outcomes):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
