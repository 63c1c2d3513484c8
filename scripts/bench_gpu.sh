#!/usr/bin/env bash
# The GPU benchmarks (bench/gpu.py) on a machine with an NVIDIA GPU and driver: sets up .venv-gpu with
# onnxruntime-gpu + CuPy (the gpu extra), CUDA torch (the train extra) and TensorRT's libraries for the
# TensorRT execution provider, then runs items 1, 2 and 4 within 8 minutes into bench/results/gpu/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
[ -x .venv-gpu/bin/python ] || "$PYTHON" -m venv .venv-gpu
.venv-gpu/bin/python -m pip install --quiet --upgrade pip
.venv-gpu/bin/python -m pip install --quiet -e ".[serve,gpu,train,triton,dev]"
# Optional: without these the TensorRT run is reported as failed and the others still run.
.venv-gpu/bin/python -m pip install --quiet "tensorrt-cu12-libs" || echo "TensorRT libraries not installed"
TRT_LIBS="$(.venv-gpu/bin/python -c 'import pathlib, tensorrt_libs; print(pathlib.Path(tensorrt_libs.__file__).parent)' 2>/dev/null || true)"
export LD_LIBRARY_PATH="${TRT_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec .venv-gpu/bin/python -m bench.gpu "$@"
