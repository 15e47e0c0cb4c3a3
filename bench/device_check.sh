#!/usr/bin/env bash
# The GPU path proven and timed in one command (about 8 minutes on one GPU):
#   bash bench/device_check.sh OUT_DIR          # on a GPU machine
#   bash bench/device_check.sh --cpu OUT_DIR    # smoke mode: the same stages at tiny sizes on the CPU
# Writes OUT_DIR/device_check.json (summary), OUT_DIR/device_check.log and the reports it names; exit 0 when
# every required stage passed. Needs only torch, numpy, scikit-learn, tensorboard, tqdm, matplotlib and
# pytest: the repository is put on PYTHONPATH, nothing is installed. PYTHON picks the interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$ROOT"
exec "${PYTHON:-python3}" -m bench.device_check "$@"
