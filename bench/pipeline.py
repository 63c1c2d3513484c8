"""Benchmark: per-image latency of ``/v1/classify`` with cached labels against the transformers pipeline.

``transformers.pipeline("zero-shot-image-classification")`` encodes every candidate label again for
every image, so its cost grows with the label count; the gateway encodes labels once and then only
runs the image encoder and one matrix product. Both sides get the same ViT-B/32-sized CLIP weights
(:mod:`bench.clip_model`, random but seeded), the same image files, the same labels and the same
prompt template, and must pick the same top-1 label for every image (otherwise the comparison is
broken). The ONNX image encoder alone, at batch 1, is timed for reference. Target: at 1,000
labels the gateway is at least 40x faster per image.

Images are synthetic-world scenes at the model's input size (224 px, JPEG), so neither side resizes
and the two preprocessing implementations see identical pixels.

Run: ``.venv/bin/python -m bench.pipeline [--tiny] [--out DIR]``.
"""

from __future__ import annotations

import base64
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer

from bench.clip_model import CACHE, TEMPLATE, benchmark_labels, bundle_name, clip_bundle
from bench.report import RESULTS, Table, write_result

TARGET = 40.0  # times faster at the largest label count (full size)
_ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


@dataclass(frozen=True)
class Plan:
    label_counts: tuple[int, ...]
    images: int  # distinct images; every one is classified by both sides at every label count
    gateway_requests: int  # timed requests per label count (cycling through the images)
    pipeline_calls: dict[int, int]  # timed pipeline calls per label count
    encoder_runs: int


FULL = Plan((10, 100, 1000), images=4, gateway_requests=20, pipeline_calls={10: 8, 100: 8, 1000: 4},
            encoder_runs=20)  # fmt: skip
TINY = Plan((3, 10, 30), images=3, gateway_requests=6, pipeline_calls={3: 3, 10: 3, 30: 3}, encoder_runs=5)


def _image_files(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` synthetic scenes at ``size`` px, saved as JPEG files both sides read."""
    from training.data.synthetic import SyntheticWorld

    world = SyntheticWorld(image_size=max(16, size), seed=2024)
    paths = []
    for i in range(count):
        image = world.sample("eval", 5 * i)[0]
        if image.size != (size, size):
            image = image.resize((size, size))
        path = folder / f"image-{i}.jpg"
        image.save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def _log(message: str) -> None:
    print(f"[bench.pipeline] {message}", flush=True)


def _ms(seconds: list[float]) -> tuple[float, float]:
    """Median and 95th percentile, in milliseconds."""
    values = np.asarray(seconds) * 1000
    return float(np.median(values)), float(np.percentile(values, 95))


# -- the two sides ------------------------------------------------------------------------------


def load_pipeline(hf: Path, device: str, fp16: bool) -> Any:
    """The transformers pipeline on the folder's weights (float16 only off the CPU)."""
    import torch
    from transformers import pipeline

    dtype = torch.float16 if fp16 and device != "cpu" else torch.float32
    return pipeline("zero-shot-image-classification", model=str(hf), device=device, dtype=dtype)


def time_pipeline(
    classify: Any, images: list[Path], labels: list[str], calls: int, warm_up: bool
) -> tuple[list[float], list[str], list[float]]:
    """Seconds per timed call (cycling through ``images``; at least one call each), and the top-1 label
    and its score per image, from the timed calls."""
    run = lambda path: classify(str(path), candidate_labels=labels, hypothesis_template=TEMPLATE)  # noqa: E731
    if warm_up:
        run(images[0])
    seconds, best = [], {}
    for i in range(max(calls, len(images))):
        began = time.perf_counter()
        answer = run(images[i % len(images)])
        seconds.append(time.perf_counter() - began)
        best.setdefault(i % len(images), answer[0])
    top = [best[i] for i in range(len(images))]
    return seconds, [b["label"] for b in top], [float(b["score"]) for b in top]


def _classify(client: httpx.Client, url: str, blob: str, labels: list[str] | str) -> dict[str, Any]:
    """Top prediction for one image; ``labels`` is a list (sent inline) or a label set's name."""
    body: dict[str, Any] = {"images": [blob]}
    body |= {"label_set": labels} if isinstance(labels, str) else {"labels": labels, "templates": [TEMPLATE]}
    response = client.post(f"{url}/v1/classify", json=body, timeout=900)
    response.raise_for_status()
    return response.json()["results"][0]["predictions"][0]


@dataclass
class GatewayTimes:
    inline: list[float]  # seconds per request with the labels sent in the request (cached)
    label_set: list[float]  # seconds per request naming a stored label set
    top: list[str]  # top-1 label per image (both routes must agree)
    scores: list[float]
    misses: float  # text-encoder cache misses during the timed requests: must be 0


def time_gateway(url: str, images: list[Path], labels: list[str], requests: int) -> GatewayTimes:
    """Register ``labels`` as a label set (that encodes and caches them), then time ``requests``
    single-image classify requests with the labels inline, and as many naming the label set."""
    from harness.metrics import metric

    blobs = [base64.b64encode(path.read_bytes()).decode() for path in images]
    name = f"bench-{len(labels)}"
    with httpx.Client() as client:
        body = {"labels": labels, "templates": [TEMPLATE]}
        client.put(f"{url}/v1/label-sets/{name}", json=body, timeout=900).raise_for_status()
        best = [_classify(client, url, blob, labels) for blob in blobs]
        by_set = [_classify(client, url, blob, name)["label"] for blob in blobs]
        if by_set != [b["label"] for b in best]:
            raise AssertionError(f"label set {name} and inline labels disagree: {by_set} vs {best}")
        misses = metric(url, "lit_text_cache_misses_total")
        timed: dict[str, list[float]] = {"inline": [], "set": []}
        for route, chosen in (("inline", labels), ("set", name)):
            for i in range(requests):
                began = time.perf_counter()
                _classify(client, url, blobs[i % len(blobs)], chosen)
                timed[route].append(time.perf_counter() - began)
        misses = metric(url, "lit_text_cache_misses_total") - misses
    return GatewayTimes(
        timed["inline"], timed["set"], [b["label"] for b in best], [float(b["score"]) for b in best], misses
    )


def time_encoder(repository: Path, images: list[Path], runs: int, providers: tuple[str, ...], threads: int):
    """Seconds per run of the bundle's ONNX image encoder alone, batch 1, on preprocessed pixels."""
    import onnxruntime as ort
    from PIL import Image

    from lit_bundle.preprocess import resize_and_crop
    from lit_bundle.repository import load_bundle

    bundle = load_bundle(repository)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(bundle.image_model), options, providers=[_ORT_PROVIDERS[p] for p in providers]
    )
    pixels = [
        np.asarray(resize_and_crop(Image.open(path).convert("RGB"), bundle.manifest.preprocess))[None]
        for path in images
    ]
    session.run(None, {"pixels": pixels[0]})  # warm-up
    seconds = []
    for i in range(runs):
        began = time.perf_counter()
        session.run(None, {"pixels": pixels[i % len(pixels)]})
        seconds.append(time.perf_counter() - began)
    return seconds


# -- the benchmark ------------------------------------------------------------------------------


def _plot(rows: list[dict[str, Any]], title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [r["labels"] for r in rows]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    axes.plot(counts, [r["pipeline_ms"] for r in rows], "o-", label="transformers pipeline")
    axes.plot(
        counts, [r["gateway_median_ms"] for r in rows], "s-", label="gateway /v1/classify, cached (median)"
    )
    axes.plot(counts, [r["label_set_median_ms"] for r in rows], "^--", label="gateway, label set (median)")
    axes.fill_between(
        counts, [r["gateway_median_ms"] for r in rows], [r["gateway_p95_ms"] for r in rows],
        alpha=0.2, color="C1", label="gateway median to p95",
    )  # fmt: skip
    axes.axhline(rows[0]["encoder_ms"], color="gray", linestyle=":", label="ONNX image encoder alone")
    axes.set(xscale="log", yscale="log", xlabel="candidate labels", ylabel="ms per image", title=title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    return figure


def run(
    out: Path = RESULTS,
    tiny: bool = False,
    providers: tuple[str, ...] = ("cpu",),
    device: str = "cpu",
    fp16: bool = False,
    work: Path = CACHE,
) -> Path:
    """Measure both sides at each label count and write ``<out>/pipeline.{md,json,png}``."""
    import json

    import torch

    from harness.gateway import running_gateway

    plan = TINY if tiny else FULL
    began = time.perf_counter()
    hf, repository = clip_bundle(work, tiny=tiny, fp16=fp16)
    _log(f"model and bundle ready in {time.perf_counter() - began:.0f} s")
    size = json.loads((hf / "config.json").read_text())["vision_config"]["image_size"]
    threads = os.cpu_count() or 1
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    agree = total = 0
    worst_score_diff = 0.0
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
            folder = Path(tmp)
            images = _image_files(folder, plan.images, size)
            encoder = _ms(time_encoder(repository, images, plan.encoder_runs, providers, threads))[0]
            classify = load_pipeline(hf, device, fp16)
            pipeline_runs = {}
            for count in plan.label_counts:  # one warm-up call, before the first (smallest) count
                began = time.perf_counter()
                labels, calls = benchmark_labels(count), plan.pipeline_calls[count]
                pipeline_runs[count] = time_pipeline(classify, images, labels, calls, not pipeline_runs)
                _log(f"pipeline, {count} labels: {time.perf_counter() - began:.0f} s")
            del classify  # its memory, before the gateway starts
            environment = {
                "LIT_REPOSITORY": str(repository),
                "LIT_INTRA_OP_THREADS": str(threads),
                "LIT_PROVIDERS": json.dumps(list(providers)),
                # The first request encodes every label (1,000 prompts at the bundle's full context
                # length): not timed, but it must not time out on a slow machine.
                "LIT_REQUEST_TIMEOUT_S": "900",
            }
            with running_gateway(folder, **environment) as url:
                for count in plan.label_counts:
                    labels, began = benchmark_labels(count), time.perf_counter()
                    gateway = time_gateway(url, images, labels, plan.gateway_requests)
                    _log(f"gateway, {count} labels (encoding included): {time.perf_counter() - began:.0f} s")
                    p_seconds, p_top, p_scores = pipeline_runs[count]
                    matches = sum(a == b for a, b in zip(gateway.top, p_top, strict=True))
                    agree, total = agree + matches, total + len(images)
                    diff = max(abs(a - b) for a, b in zip(gateway.scores, p_scores, strict=True))
                    worst_score_diff = max(worst_score_diff, diff)
                    median, p95 = _ms(gateway.inline)
                    set_median, set_p95 = _ms(gateway.label_set)
                    pipeline_ms = statistics.median(s * 1000 for s in p_seconds)
                    rows.append(
                        {
                            "labels": count,
                            "pipeline_ms": pipeline_ms,
                            "pipeline_calls": len(p_seconds),
                            "gateway_median_ms": median,
                            "gateway_p95_ms": p95,
                            "gateway_requests": len(gateway.inline),
                            "label_set_median_ms": set_median,
                            "label_set_p95_ms": set_p95,
                            "label_set_speedup": pipeline_ms / set_median,
                            "speedup": pipeline_ms / median,
                            "encoder_ms": encoder,
                            "top1_agree": matches,
                            "images": len(images),
                            "text_cache_misses_while_timed": gateway.misses,
                        }
                    )
    finally:
        torch.set_num_threads(previous_threads)

    largest = rows[-1]
    misses = sum(r["text_cache_misses_while_timed"] for r in rows)
    met = largest["speedup"] >= TARGET
    name = bundle_name(tiny) + (" fp16" if fp16 else "")
    table = Table(
        title=f"Per-image latency: transformers pipeline vs cached /v1/classify ({name})",
        columns=[
            "labels",
            "pipeline (ms/image)",
            "gateway median (ms)",
            "gateway p95 (ms)",
            "speed-up (x)",
            "label set: median (ms)",
            "label set: speed-up (x)",
            "encoder alone (ms)",
            "top-1 agree",
        ],
        rows=[
            [
                r["labels"],
                r["pipeline_ms"],
                r["gateway_median_ms"],
                r["gateway_p95_ms"],
                r["speedup"],
                r["label_set_median_ms"],
                r["label_set_speedup"],
                r["encoder_ms"],
                f"{r['top1_agree']}/{r['images']}",
            ]
            for r in rows
        ],
        notes=[
            f"Same weights (random, seeded CLIP with {'tiny' if tiny else 'ViT-B/32'} sizes), same "
            f"{plan.images} JPEG images ({size} px), same labels, template {TEMPLATE!r} on both sides.",
            f"Pipeline: median of {', '.join(str(r['pipeline_calls']) for r in rows)} calls after a warm-up "
            f"(torch on {device}, {threads} threads, "
            f"{'float16' if fp16 and device != 'cpu' else 'float32'}).",
            f"Gateway: {plan.gateway_requests} single-image JSON requests per label count with the labels "
            "and template in the request (like the pipeline call), all predictions returned; the labels "
            "were cached beforehand by registering them as a label set. 'Label set': as many requests "
            "naming that set instead. ONNX Runtime providers "
            f"{list(providers)}, LIT_INTRA_OP_THREADS={threads}, default batching settings; text-encoder "
            f"cache misses during timed requests: {misses:.0f}.",
            f"Encoder alone: the bundle's ONNX image encoder, batch 1, median of {plan.encoder_runs} runs.",
        ],
    )
    verdict = "met" if met else "NOT met"
    summary = [
        f"At {largest['labels']:,} labels cached `/v1/classify` takes {largest['gateway_median_ms']:.0f} ms "
        f"per image against {largest['pipeline_ms']:,.0f} ms for the transformers pipeline: "
        f"{largest['speedup']:.3g}x faster (target at least {TARGET:.0f}x at 1,000 labels: {verdict}); "
        f"naming a stored label set instead: {largest['label_set_median_ms']:.0f} ms, "
        f"{largest['label_set_speedup']:.3g}x.",
        f"Top-1 agreement between the gateway and the pipeline: {agree}/{total} (image, label count) pairs; "
        f"largest top-1 probability difference {worst_score_diff:.1e}.",
    ]
    if fp16:
        summary.append(
            "float16 bundle: rounding may flip near-ties between labels, so a top-1 disagreement here is "
            "not necessarily a broken comparison (compare with the float32 run)."
        )
    if tiny:
        summary.append(
            "Tiny run (a smoke test): the figures mean nothing; the target applies to the full run."
        )
    figures = {
        "rows": rows,
        "threads": threads,
        "providers": list(providers),
        "device": device,
        "fp16": fp16,
        "tiny": tiny,
        "template": TEMPLATE,
        "target_speedup": TARGET,
        "target_met": met,
        "top1_agreement": {"agree": agree, "total": total},
        "max_top1_score_diff": worst_score_diff,
    }
    return write_result(
        out, "pipeline", "Gateway vs the transformers pipeline", [table], figures,
        plot=_plot(rows, f"Per-image latency ({name})"), summary=summary,
    )  # fmt: skip


def main(
    tiny: Annotated[bool, typer.Option(help="tiny CLIP and label counts (a smoke test)")] = False,
    out: Annotated[Path, typer.Option(help="results folder")] = RESULTS,
) -> None:
    run(out, tiny=tiny)


if __name__ == "__main__":
    typer.run(main)
