#!/usr/bin/env bash
# Make the wheels the H200 check kit (scripts/gpu_check.sh) needs and that machine lacks, on a machine with
# a package registry: onnxruntime-gpu (CUDA 13) and the gateway's and benchmarks' pure-Python dependencies
# for CPython 3.12 on x86_64; files over 60 MiB are split into parts (the
# transfer to the GPU machine takes at most 64 MiB per call). What the GPU machine already has (torch,
# CuPy, the NVIDIA CUDA 13 wheels, transformers, timm) is not downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-.gpu-wheelhouse}"
PIP=(.venv/bin/python -m pip)
mkdir -p "$OUT"
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
"${PIP[@]}" download --quiet "${TARGET[@]}" --no-deps -d "$OUT" "onnxruntime-gpu==1.31.1"
# The serve, triton and client extras' dependencies and the benchmarks' (matplotlib, typer), resolved for 3.12.
"${PIP[@]}" download --quiet "${TARGET[@]}" -d "$OUT" \
  "fastapi>=0.110" "uvicorn[standard]>=0.29" "pydantic-settings>=2.2" "prometheus-client>=0.20" \
  "python-multipart>=0.0.9" "redis>=5" "threadpoolctl>=3.1" "tritonclient[http,grpc]>=2.40" \
  "httpx>=0.27" "typer>=0.12" "rich>=13" "matplotlib>=3.8" "onnx>=1.16" "onnxconverter-common>=1.14" \
  "tokenizers>=0.15" "safetensors>=0.4" "webdataset>=0.2.86" "pyyaml>=6" "tqdm>=4.66"
.venv/bin/python scripts/wheel_parts.py split "$OUT" --mib 60
du -sh "$OUT"
