#!/usr/bin/env bash
# Create the separate Triton-client environment used by the Open Inference Protocol tests
# (tests/inference) and the benchmark's perf_analyzer runs (bench/):
#
#   .venv-triton/                        tritonclient[grpc,http] (it pins protobuf < 7, which
#                                        clashes with the project's protobuf 7, so it gets
#                                        its own venv; its generated inference.* messages
#                                        also clash with ours in one process)
#   .venv-triton/perf-analyzer/bin/perf_analyzer
#                                        from the tritonclient 2.51.0 wheel: the newest
#                                        wheel whose perf_analyzer runs on Debian 12's
#                                        glibc 2.36 (2.52-2.60 need glibc 2.38; later
#                                        wheels no longer ship it)
#
# perf_analyzer also needs libb64 (apt: libb64-0d) and libcudart.so.12 (pip:
# nvidia-cuda-runtime-cu12, put on LD_LIBRARY_PATH by bench/perf_analyzer.py) even on CPU.
# Usage: bash bench/setup_triton_env.sh   (idempotent; TRITON_VENV=path to change the folder)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TRITON_VENV:-.venv-triton}"
PYTHON="${PYTHON:-python3.11}"
STAMP="$VENV/.installed-triton-v2"  # a new name when the requirements change: envs update
if [ -f "$STAMP" ]; then
  exit 0
fi
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check --quiet"
$PIP install -r bench/triton-requirements.txt
if [ ! -x "$VENV/perf-analyzer/bin/perf_analyzer" ]; then
  $PIP install --no-deps --target "$VENV/perf-analyzer" tritonclient==2.51.0
fi
if ! ldconfig -p 2>/dev/null | grep -q libb64.so.0d; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq libb64-0d >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq libb64-0d >/dev/null; }) ||
      echo "setup_triton_env: could not install libb64-0d; perf_analyzer will not run" >&2
  else
    echo "setup_triton_env: install libb64-0d (apt) for perf_analyzer" >&2
  fi
fi
touch "$STAMP"
