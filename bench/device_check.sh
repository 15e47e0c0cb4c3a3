#!/usr/bin/env bash
# The GPU path checked and timed in one command (docs/device-check.md):
#   bash bench/device_check.sh OUT          # on a machine with a CUDA GPU
#   bash bench/device_check.sh --cpu OUT    # the same stages at tiny sizes on the CPU
# Nothing is installed: the repository goes on PYTHONPATH. PYTHON picks the interpreter (default: the
# first of python3 and python that imports torch).
set -euo pipefail
export PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${PYTHON:-}" ]; then
    for PYTHON in python3 python; do "$PYTHON" -c "import torch" 2>/dev/null && break; done
fi
exec "$PYTHON" -m bench.device_check "$@"
