#!/usr/bin/env bash
# Installs corekit and its development tools into the current Python environment.
# On a machine without an NVIDIA GPU it installs the CPU build of torch 2.13.0 first,
# so pip does not pull several GB of CUDA wheels; a torch you installed yourself
# (e.g. a CUDA build) is kept, since pyproject.toml only asks for a range.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$PY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install -q "torch>=2.4,<3"
  else
    # A CPU wheel that pip can already see (a local wheel cache or index) first; PyTorch's
    # CPU index only when there is none, so that an offline mirror needs no retries.
    "$PY" -m pip install -q "torch==2.13.0+cpu" 2>/dev/null \
      || "$PY" -m pip install -q "torch==2.13.0" --extra-index-url https://download.pytorch.org/whl/cpu
  fi
fi
"$PY" -m pip install -q -e ".[dev]"
