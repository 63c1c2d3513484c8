#!/usr/bin/env bash
# Set up a light serving environment (no torch) and start the gateway on the committed model.
# Configure with LIT_* environment variables, e.g. LIT_PORT=9000 LIT_API_KEYS='["secret"]'.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
[ -x .venv-serve/bin/python ] || "$PYTHON" -m venv .venv-serve
.venv-serve/bin/python -m pip install --quiet -e ".[serve,cpu]"
exec .venv-serve/bin/lit-serve
