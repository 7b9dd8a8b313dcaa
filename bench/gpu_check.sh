#!/usr/bin/env bash
# A short, prepared GPU run (< 8 minutes on one H100/H200): the tiny-gpu preset and a randomly initialised
# Qwen2.5-0.5B-shaped model, a few steps each; time per phase, generation tokens/s, peak GPU memory and the memory
# estimate beside it. Without a CUDA GPU it says so and exits 0. Arguments go to bench/gpu_check.py
# (--steps N, --out FILE, --cpu-smoke). See bench/README.md, "GPU check".
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec "$PY" bench/gpu_check.py "$@"
