"""Benchmark: which toolchain makes the CLIP ViT-B/32-sized image encoder fastest on this CPU, and how far
each lower-precision variant drifts from fp32.

Candidates, all on the same ONNX file and the same decoded photos:

- ``ort-fp32``: ONNX Runtime as the gateway runs it today (the reference);
- ``ort-int8``: ONNX Runtime's static post-training quantisation (QDQ, per-channel int8 weights, uint8
  activations calibrated on photos; MatMul and Gemm only, so LayerNorm, Softmax and GELU stay fp32);
- ``ov-fp32`` / ``ov-bf16``: OpenVINO with the LATENCY hint, inference precision f32 or bf16 (bf16 runs
  only where the CPU has AVX512-BF16 or AMX: OpenVINO reports it in ``OPTIMIZATION_CAPABILITIES``);
- ``ov-int8``: OpenVINO with NNCF's post-training quantisation (``ModelType.TRANSFORMER``, which keeps
  attention-sensitive ops out of int8), calibrated on the same photos.

Figures: images/s at batch 1 and 8 (best of the timed runs), and per-row cosine of each variant's
embeddings to fp32 on held-out photos. The weights are random (nothing may come from a hub), so the
cosine shows numerical drift, not zero-shot accuracy: the accuracy gate needs a trained tower.

    pip install "openvino>=2026.4" "nncf>=3.4"   # not in any extra yet: the toolchain is still being chosen
    python -m bench.cpu_precision            # writes bench/results/cpu_precision.{json,md}
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench.report import RESULTS, machine

Runner = Callable[[np.ndarray], np.ndarray]


def _photos(count: int, size: int, offset: int = 0) -> np.ndarray:
    from harness.images import photo_jpegs
    from lit_bundle.preprocess import PreprocessSpec
    from service.decode import DecodeLimits, decode_image

    spec = PreprocessSpec(size=size)
    blobs = photo_jpegs(count + offset, size=(640, 480))[offset:]
    return np.stack([decode_image(blob, spec, DecodeLimits()) for blob in blobs])


def _ort(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda pixels: session.run(None, {name: pixels})[0]


def _ort_int8(path: Path, calibration: np.ndarray, work: Path, threads: int) -> Runner:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"pixels": calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    out = work / "image.int8.onnx"
    quantize_static(
        str(path), str(out), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
    )  # fmt: skip
    return _ort(out, threads)


def _openvino(model: Any, precision: str, threads: int) -> Runner:
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    return lambda pixels: np.array(request.infer({0: pixels})[compiled.output(0)])


def _ov_int8(path: Path, calibration: np.ndarray, threads: int) -> Runner:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(path))
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    quantized = nncf.quantize(
        model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration)
    )
    return _openvino(quantized, "f32", threads)


def _speed(run: Runner, pixels: np.ndarray, batch: int, min_s: float) -> float:
    feed = pixels[:batch]
    run(feed)  # first run: allocations, compilation
    best, began = 0.0, time.perf_counter()
    while time.perf_counter() - began < min_s:
        start = time.perf_counter()
        run(feed)
        best = max(best, batch / (time.perf_counter() - start))
    return best


def _cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    got = got / np.linalg.norm(got, axis=1, keepdims=True)
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    return (got * want).sum(axis=1)


def main(
    threads: Annotated[int, typer.Option(help="intra-op threads (0: all cores)")] = 0,
    seconds: Annotated[float, typer.Option(help="timed seconds per variant and batch size")] = 8.0,
    calibration: Annotated[int, typer.Option(help="calibration photos")] = 32,
    tiny: Annotated[bool, typer.Option(help="the tiny CLIP (a smoke run)")] = False,
    out: Annotated[Path, typer.Option(help="results folder")] = RESULTS,
) -> None:
    import openvino as ov

    from bench.clip_model import clip_bundle
    from lit_bundle.repository import load_bundle

    bundle = load_bundle(clip_bundle(tiny=tiny)[1])
    size, path = bundle.manifest.preprocess.size, bundle.image_model
    calib, held_out = _photos(calibration, size), _photos(16, size, offset=calibration)
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        variants: dict[str, Callable[[], Runner]] = {
            "ort-fp32": lambda: _ort(path, threads),
            "ort-int8": lambda: _ort_int8(path, calib, Path(work), threads),
            "ov-fp32": lambda: _openvino(str(path), "f32", threads),
            "ov-bf16": lambda: _openvino(str(path), "bf16", threads),
            "ov-int8": lambda: _ov_int8(path, calib, threads),
        }
        reference = None
        for name, make in variants.items():
            if name == "ov-bf16" and "BF16" not in capabilities:
                rows.append({"variant": name, "note": f"not run: this CPU lacks bf16 ({capabilities})"})
                continue
            began = time.perf_counter()
            run = make()
            prepared = time.perf_counter() - began
            embeddings = np.concatenate([run(held_out[i : i + 1]) for i in range(len(held_out))])
            reference = embeddings if reference is None else reference
            cos = _cosines(embeddings, reference)
            row = {
                "variant": name, "prepare_s": round(prepared, 1),
                "batch1_ips": round(_speed(run, held_out, 1, seconds), 2),
                "batch8_ips": round(_speed(run, held_out, 8, seconds), 2),
                "min_cosine": round(float(cos.min()), 5), "mean_cosine": round(float(cos.mean()), 5),
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    base = next(r for r in rows if r["variant"] == "ort-fp32")
    for row in rows:
        if "batch1_ips" in row:
            row["speedup_b1"] = round(row["batch1_ips"] / base["batch1_ips"], 2)
            row["speedup_b8"] = round(row["batch8_ips"] / base["batch8_ips"], 2)
    result = {
        "machine": machine(),
        "cpu_capabilities": capabilities,
        "bundle": bundle.manifest.name,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_precision.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# CPU precision variants of the {bundle.manifest.name} image encoder",
        "",
        f"Machine: {result['machine']}; OpenVINO CPU capabilities: {', '.join(capabilities)}.",
        "",
        "| variant | images/s b1 | images/s b8 | x fp32 b1 | x fp32 b8 | min cosine | prepare s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "batch1_ips" not in r:
            lines.append(f"| {r['variant']} | {r['note']} | | | | | |")
            continue
        lines.append(
            f"| {r['variant']} | {r['batch1_ips']} | {r['batch8_ips']} | {r['speedup_b1']} | "
            f"{r['speedup_b8']} | {r['min_cosine']} | {r['prepare_s']} |"
        )
    (out / "cpu_precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
