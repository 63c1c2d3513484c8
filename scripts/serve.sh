#!/usr/bin/env bash
# Set up a light serving environment (no torch) and start the gateway on the committed model.
# Configure with LIT_* environment variables, e.g. LIT_PORT=9000 LIT_API_KEYS='["secret"]'.
# With LIT_BACKEND=triton it also installs tritonclient and sends encoder work to LIT_TRITON_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
[ -x .venv-serve/bin/python ] || "$PYTHON" -m venv .venv-serve
EXTRAS="serve,cpu"
[ "${LIT_BACKEND:-onnxruntime}" = triton ] && EXTRAS="serve,cpu,triton"
.venv-serve/bin/python -m pip install --quiet -e ".[$EXTRAS]"
exec .venv-serve/bin/lit-serve
