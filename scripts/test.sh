#!/usr/bin/env bash
# Set up the development environment (idempotent) and run the linters and the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k losses`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[serve,cpu,train,triton,client,dev]"
# A real Triton server for the Triton-backend tests: the tritonserver binary inside nvidia-pytriton.
# --no-deps: only the binary is used, and pytriton's own pins (numpy<2) would downgrade the project's.
# Its Python backend stub needs NumPy 1.x, so that goes into a folder of its own (tests/triton_server.py).
.venv/bin/python -m pip install --quiet --no-deps "nvidia-pytriton==0.7.0"
[ -d .venv/triton-stub-packages/numpy ] ||
  .venv/bin/python -m pip install --quiet --no-deps --target .venv/triton-stub-packages "numpy==1.26.4"
# The real gpu extra (onnxruntime-gpu, CuPy) with the gateway, in a venv of its own: onnxruntime-gpu and
# onnxruntime provide the same module and must never share one. tests/test_cuda_major.py runs
# scripts/check_cuda_major.py in it. Without the extra's NVIDIA CUDA 13 wheels: they would make it 2.7 GB,
# and this machine has no GPU to load them on.
[ -x .venv-gpu/bin/python ] || "$PYTHON" -m venv .venv-gpu
.venv-gpu/bin/python -m pip install --quiet --upgrade pip
GPU_EXTRA="$(.venv/bin/python scripts/check_cuda_major.py --gpu-extra-without-nvidia-wheels pyproject.toml)"
mapfile -t GPU_EXTRA <<<"$GPU_EXTRA"
.venv-gpu/bin/python -m pip install --quiet -e ".[serve]" "${GPU_EXTRA[@]}"
# docker-compose 1.29 (for `docker-compose config`) needs PyYAML 5.3, so it gets a venv of its own.
[ -x .venv-compose/bin/docker-compose ] || {
  "$PYTHON" -m venv .venv-compose
  .venv-compose/bin/python -m pip install --quiet "docker-compose==1.29.2" "PyYAML==5.3.1"
}
# open_clip (its --lock-image training is a row of the training benchmark) in a venv of its own that
# reuses this one's torch.
[ -x bench/.cache/openclip-venv/bin/python ] ||
  .venv/bin/python -c "from bench.training import setup_openclip; setup_openclip()"
# Real servers and validators from Debian: Prometheus (prometheus, promtool) and redis-server.
bash scripts/system-deps.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Strict type check of lit_bundle, service and lit_client ([tool.mypy] in pyproject.toml).
.venv/bin/python -m mypy
.venv/bin/python -m pytest "$@"
