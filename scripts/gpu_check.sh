#!/usr/bin/env bash
# The H200 check kit: on one NVIDIA GPU machine, offline (Python 3.12 with torch for CUDA 13, cupy-cuda13x
# and the NVIDIA CUDA 13 wheels installed; no package registry), proves the GPU path in at most 8 minutes
# and writes bench/results/gpu/:
#   bench.gpu_checks  refusal, sessions on the device, GPU vs CPU parity, CuPy vs NumPy scoring at 10 /
#                     1,000 / 50,000 labels, fp16 gated on the GPU, the gateway end to end on CUDA;
#   bench.gpu         the gateway vs the raw CUDA / TensorRT image encoder (64 clients, 1600x1200 JPEGs).
# What the machine lacks arrives as wheels in .gpu-wheelhouse (scripts/gpu_wheelhouse.sh, in parts of at
# most 64 MiB), joined and installed here into .venv-h200, which sees the machine's own packages; the
# project itself runs from this folder.
# --allow-cpu: the same on the CPU providers at tiny sizes (the smoke run CI does, without the wheelhouse).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="bench/results/gpu"
if [ "${1:-}" = "--allow-cpu" ]; then
  PY="${PYTHON:-.venv/bin/python}"
  OUT="${2:-$OUT}"
  "$PY" -m bench.gpu_checks --allow-cpu --tiny --out "$OUT"
  exec "$PY" -m bench.gpu --allow-cpu --tiny --out "$OUT"
fi
WHEELHOUSE="${WHEELHOUSE:-.gpu-wheelhouse}"
python3 scripts/wheel_parts.py join "$WHEELHOUSE"
[ -x .venv-h200/bin/python ] || python3 -m venv --system-site-packages .venv-h200
PY=.venv-h200/bin/python
# onnxruntime-gpu replaces the machine's CPU onnxruntime inside this venv (both provide one module).
"$PY" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" "onnxruntime-gpu==1.31.1"
# The project runs from this folder (python -m ...); its dependencies come from the wheelhouse.
"$PY" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" \
  fastapi uvicorn pydantic-settings prometheus-client python-multipart redis threadpoolctl httpx typer rich \
  matplotlib onnx onnxconverter-common webdataset "tritonclient[http,grpc]"
# TensorRT's libraries, when a tensorrt-cu13-libs wheel came along: the TensorRT checks use them.
if ls "$WHEELHOUSE"/tensorrt*libs*.whl >/dev/null 2>&1; then
  "$PY" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" "$WHEELHOUSE"/tensorrt*libs*.whl
  TRT_LIBS="$("$PY" -c 'import pathlib, tensorrt_libs; print(pathlib.Path(tensorrt_libs.__file__).parent)')"
  export TRT_LIBS LD_LIBRARY_PATH="${TRT_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
"$PY" -c 'import onnxruntime as ort; print("onnxruntime", ort.__version__, ort.get_available_providers())'
status=0
timeout 300 "$PY" -m bench.gpu_checks --out "$OUT" || status=$?
timeout 240 "$PY" -m bench.gpu --budget-s 200 --out "$OUT" || status=$?
exit "$status"
