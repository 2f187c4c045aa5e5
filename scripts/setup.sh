#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with StealBench and its
# dev tools installed from the package registry (torch + torchvision: ~7 min, ~5 GB the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
