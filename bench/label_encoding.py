"""Benchmark: registering a label set against the raw text encoder, in prompts/s.

*Gateway*: ``PUT /v1/label-sets/<name>`` with labels and CLIP's 7 ImageNet templates (``imagenet7``),
timed end to end from the client: request parsing, validation, tokenisation, the text encoder, prompt
ensembling, the cache and the label store. Every label is new to the gateway (all cache misses,
checked against its metrics), so every prompt is encoded. prompts/s = labels x 7 / seconds.

*Raw text encoder*: an ONNX Runtime session on the bundle's text model with the gateway's session
options (providers, intra-op threads) and the bundle's tokenizer as the gateway loads it
(``Bundle.load_tokenizer``: padded to each batch's longest prompt where the text graph's sequence axis
is dynamic), over the same prompts at batch sizes 16..512; the best prompts/s. Tokenisation is included
on both sides.

Ratio = gateway prompts/s / raw best prompts/s. Measured on the ViT-B/32 CLIP bundle (a 12-layer text
encoder with a 77-token context, where the encoder dominates) and on the demo bundle (a tiny text
encoder, where the gateway's per-label work shows). Both register 1,000 labels x 7 templates, within
the gateway's default ``LIT_LABEL_SET_TIMEOUT_S``. ``--clip-labels N`` registers fewer.

Run: ``.venv/bin/python -m bench.label_encoding [--tiny] [--out DIR] [--clip-labels N]``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench.gateway_throughput import ort_session
from bench.report import RESULTS, Table, write_result
from harness.gateway import gateway_pid
from harness.metrics import prometheus, summed
from harness.usage import CpuMeter

TEMPLATE_SET = "imagenet7"
GATEWAY_CHUNK = 256  # service.runtime.TEXT_CHUNK: prompts per text-encoder call in the gateway


@dataclass(frozen=True)
class Plan:
    labels: int  # per registration
    repeats: int  # registrations, each with new labels (all misses); the median counts
    batch_sizes: tuple[int, ...]  # raw encoder
    raw_min_s: float  # per raw batch size: at least this long and one run


CLIP_FULL = Plan(1000, 1, (16, 64, 256), 4.0)
DEMO_FULL = Plan(1000, 3, (16, 32, 64, 128, 256, 512), 1.0)
TINY = Plan(20, 1, (16, 64), 0.2)


def prompts_for(labels: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Label-major, as the gateway expands them (``service.text_cache.expand_prompts``)."""
    return [t.replace("{}", label) for label in labels for t in templates]


def time_raw_text_encoder(
    bundle: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    plan: Plan,
    providers: Sequence[str],
    threads: int,
) -> list[dict[str, float]]:
    """Prompts/s of tokenise + encode at each batch size, cycling through ``prompts``."""
    session = ort_session(bundle, "text", providers, threads)
    position = 0

    def encode(batch: int) -> None:
        nonlocal position
        texts = [prompts[(position + i) % len(prompts)] for i in range(batch)]
        position += batch
        encodings = tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        session.run(None, {"input_ids": ids, "attention_mask": mask})

    encode(plan.batch_sizes[0])  # the session's first run
    rows = []
    for batch in plan.batch_sizes:
        runs, began = 0, time.perf_counter()
        with CpuMeter() as cpu:
            while runs < 1 or time.perf_counter() - began < plan.raw_min_s:
                encode(batch)
                runs += 1
        seconds = cpu.wall_s
        rows.append(
            {
                "batch": batch,
                "prompts_per_s": batch * runs / seconds,
                "runs": runs,
                "other_cores": cpu.other_cores,
            }
        )
    return rows


def time_gateway(
    repository: Path, plan: Plan, templates: Sequence[str], providers: Sequence[str], threads: int, work: Path
) -> list[dict[str, float]]:
    """One row per registration: seconds, prompts/s, cache misses and text-encoder time."""
    import httpx

    from bench.clip_model import benchmark_labels
    from harness.gateway import running_gateway

    pool = benchmark_labels(plan.labels * plan.repeats)  # distinct labels: every registration misses
    settings = {
        "LIT_REPOSITORY": str(repository),
        "LIT_PROVIDERS": json.dumps(list(providers)),
        "LIT_INTRA_OP_THREADS": str(threads),
        # A CPU ViT-B/32 text encoder needs minutes for thousands of prompts; the default 30 s would
        # cancel the registration with a 504.
    }
    rows = []
    with running_gateway(work, **settings) as url, httpx.Client(timeout=3600) as client:
        for repeat in range(plan.repeats):
            labels = pool[repeat * plan.labels : (repeat + 1) * plan.labels]
            body = {"labels": labels, "templates": list(templates)}
            before = prometheus(url)
            with CpuMeter(gateway_pid()) as cpu:
                client.put(f"{url}/v1/label-sets/bench-{repeat}", json=body).raise_for_status()
            seconds = cpu.wall_s
            after = prometheus(url)
            encoder = {"name": "lit_inference_duration_seconds_sum", "encoder": "text"}
            rows.append(
                {
                    "labels": len(labels),
                    "prompts": len(labels) * len(templates),
                    "seconds": seconds,
                    "prompts_per_s": len(labels) * len(templates) / seconds,
                    "misses": summed(after, "lit_text_cache_misses_total")
                    - summed(before, "lit_text_cache_misses_total"),
                    "encoder_s": summed(after, **encoder) - summed(before, **encoder),
                    "gateway_cores": cpu.gateway_cores,
                    "other_cores": cpu.other_cores,
                }
            )
    return rows


def bench_bundle(
    repository: Path, plan: Plan, templates: Sequence[str], providers: Sequence[str], threads: int, work: Path
) -> dict[str, Any]:
    from bench.clip_model import benchmark_labels
    from lit_bundle.repository import load_bundle

    bundle = load_bundle(repository)
    prompts = prompts_for(benchmark_labels(plan.labels), templates)
    raw = time_raw_text_encoder(bundle, bundle.load_tokenizer(), prompts, plan, providers, threads)
    best = max(raw, key=lambda r: r["prompts_per_s"])
    registrations = time_gateway(repository, plan, templates, providers, threads, work)
    median = sorted(registrations, key=lambda r: r["prompts_per_s"])[len(registrations) // 2]
    for row in registrations:
        if row["misses"] != row["labels"]:
            raise RuntimeError(
                f"expected {row['labels']} cache misses, the gateway counted {row['misses']:.0f}"
            )
    return {
        "bundle": bundle.manifest.name,
        "context_length": bundle.manifest.text.context_length,
        "dynamic_length": bundle.manifest.text_encoder.inputs[0].shape[-1] == -1,
        "raw": raw,
        "raw_best": best,
        "registrations": registrations,
        "gateway": median,
        "ratio": median["prompts_per_s"] / best["prompts_per_s"],
        "plan": plan.__dict__,
    }


def _plot(results: list[dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 3.8), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        batches = [r["batch"] for r in result["raw"]]
        ax.plot(
            batches, [r["prompts_per_s"] for r in result["raw"]], "o-", label="raw text encoder (+ tokeniser)"
        )
        ax.axhline(result["gateway"]["prompts_per_s"], color="C1", linestyle="--",
                   label=f"gateway PUT label set ({result['gateway']['labels']} labels x 7)")  # fmt: skip
        ax.set(xscale="log", xlabel="batch size (raw encoder)", ylabel="prompts/s", ylim=(0, None),
               title=f"{result['bundle']}: ratio {result['ratio']:.2f}")  # fmt: skip
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _table(result: dict[str, Any], threads: int, providers: Sequence[str]) -> Table:
    best, gateway = result["raw_best"], result["gateway"]
    ratio_base = best["prompts_per_s"]
    rows: list[list[Any]] = [
        [f"raw, batch {r['batch']}", "-", r["prompts_per_s"], "-", f"{r['other_cores']:.2f}"]
        for r in result["raw"]
    ]
    rows += [
        [f"gateway PUT, {r['labels']:,} labels x 7", r["seconds"], r["prompts_per_s"],
         r["prompts_per_s"] / ratio_base, f"{r['other_cores']:.2f}"]
        for r in result["registrations"]
    ]  # fmt: skip
    at_chunk = next((r for r in result["raw"] if r["batch"] == GATEWAY_CHUNK), None)
    notes = [
        f"Raw: ONNX Runtime {list(providers)}, intra_op_num_threads={threads} (the gateway's "
        f"session options), the bundle's tokenizer (context {result['context_length']}, "
        + ("padded to each batch's longest prompt" if result["dynamic_length"] else "padded to the context")
        + "); tokenisation "
        f"included; each batch size timed for at least {result['plan']['raw_min_s']:g} s. Best "
        f"{best['prompts_per_s']:,.1f} prompts/s at batch {best['batch']}.",
        f"Gateway: every label new (cache misses = labels: "
        f"{', '.join(str(round(r['misses'])) for r in result['registrations'])}); encoding them (tokenise, "
        f"encode, ensemble: the gateway's text timer) took {gateway['encoder_s']:.2f} s of the median "
        f"registration's {gateway['seconds']:.2f} s; the gateway "
        f"encodes in chunks of {GATEWAY_CHUNK} prompts. At this rate the default LIT_LABEL_SET_TIMEOUT_S "
        f"(600 s) allows registrations of up to about {600 * gateway['prompts_per_s']:,.0f} prompts on "
        "this machine.",
    ]
    if at_chunk is not None:
        notes.append(
            f"Raw at the gateway's chunk size ({GATEWAY_CHUNK}): {at_chunk['prompts_per_s']:,.1f} prompts/s "
            f"(ratio against it: {gateway['prompts_per_s'] / at_chunk['prompts_per_s']:.2f})."
        )
    return Table(
        title=f"{result['bundle']}: label-set registration vs the raw text encoder",
        columns=["what", "seconds", "prompts/s", "ratio to raw best", "other load (cores)"],
        rows=rows,
        notes=notes,
    )


def run(
    out: Path = RESULTS,
    tiny: bool = False,
    providers: tuple[str, ...] = ("cpu",),
    fp16: bool = False,
    clip_labels: int | None = None,
    work: Path | None = None,
) -> Path:
    """Measure the ViT-B/32 CLIP bundle (``clip_tiny`` with ``tiny``) and the demo bundle; write
    ``<out>/label_encoding.{md,json,png}``."""
    from bench.clip_model import CACHE, clip_bundle
    from harness.gateway import REPOSITORY
    from training.templates import load_templates

    threads = os.cpu_count() or 1
    templates = load_templates(TEMPLATE_SET)
    _, clip_repository = clip_bundle(work or CACHE, tiny=tiny, fp16=fp16)
    clip_plan = TINY if tiny else CLIP_FULL
    if clip_labels is not None:
        clip_plan = Plan(clip_labels, clip_plan.repeats, clip_plan.batch_sizes, clip_plan.raw_min_s)
    runs = [(clip_repository, clip_plan), (REPOSITORY, TINY if tiny else DEMO_FULL)]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-labels-") as tmp:
        for index, (repository, plan) in enumerate(runs):
            folder = Path(tmp) / str(index)
            folder.mkdir()
            results.append(bench_bundle(repository, plan, templates, providers, threads, folder))

    clip, demo = results
    full_prompts = 1000 * len(templates)
    summary = [
        f"**{clip['bundle']}{' fp16' if fp16 else ''}:** registering {clip['gateway']['labels']:,} labels x "
        f"{len(templates)} templates runs at {clip['gateway']['prompts_per_s']:,.1f} prompts/s end to end, "
        f"{clip['ratio']:.2f} of the raw text encoder's best ({clip['raw_best']['prompts_per_s']:,.1f} "
        f"prompts/s at batch {clip['raw_best']['batch']}, tokenisation included on both sides); "
        + (
            f"the registration took {clip['gateway']['seconds']:,.0f} s."
            if clip["gateway"]["labels"] == 1000
            else f"1,000 labels x {len(templates)} would take about "
            f"{full_prompts / clip['gateway']['prompts_per_s']:,.0f} s (extrapolated from the rate)."
        ),
        f"**{demo['bundle']}:** {demo['gateway']['labels']:,} labels x {len(templates)} templates in "
        f"{demo['gateway']['seconds']:.2f} s = {demo['gateway']['prompts_per_s']:,.0f} prompts/s (median of "
        f"{len(demo['registrations'])}), {demo['ratio']:.2f} of the raw text encoder's "
        f"{demo['raw_best']['prompts_per_s']:,.0f} prompts/s: "
        + (
            "even beside a text encoder this small, the gateway's own per-label work (parsing, validation, "
            "ensembling, cache, store) costs little."
            if demo["ratio"] >= 0.8
            else "its text encoder is so small that the gateway's own per-label work (parsing, validation, "
            "ensembling, cache, store) shows."
        ),
        f"Same machine ({threads} cores, shared by gateway and client), same session options, templates: "
        f"{TEMPLATE_SET}.",
    ]
    others = [r["other_cores"] for result in results for r in [*result["raw"], *result["registrations"]]]
    load = (
        f"Load: other processes used {np.mean(others):.2f} cores on average while measuring (at most "
        f"{max(others):.2f})."
    )
    if not tiny and max(others) > 0.15:
        load += " **The machine was not idle while measuring: these ratios are not reliable; rerun alone.**"
    summary.append(load)
    if tiny:
        summary.append("Tiny run (a smoke test): the figures mean nothing.")
    figures = {
        "results": results,
        "templates": list(templates),
        "threads": threads,
        "providers": list(providers),
        "fp16": fp16,
        "tiny": tiny,
        "ratio": {r["bundle"]: r["ratio"] for r in results},
    }
    tables = [_table(result, threads, providers) for result in results]
    return write_result(out, "label_encoding", "Label-set registration vs the raw text encoder", tables,
                        figures, plot=_plot(results), summary=summary)  # fmt: skip


def main(
    tiny: Annotated[bool, typer.Option(help="tiny CLIP, few labels (a smoke test)")] = False,
    out: Annotated[Path, typer.Option(help="results folder")] = RESULTS,
    clip_labels: Annotated[
        int | None, typer.Option(help="labels for the CLIP registration (default 1,000: about 5 min)")
    ] = None,
) -> None:
    run(out, tiny=tiny, clip_labels=clip_labels)


if __name__ == "__main__":
    typer.run(main)
