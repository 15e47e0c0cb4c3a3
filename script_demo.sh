#!/usr/bin/env bash
# End-to-end demo on synthetic NTU-format data (no download needed), a few minutes on a 2-core CPU:
# synthetic raw skeletons -> data_gen -> seq+graph inter-skeleton pretraining -> linear classification
# and KNN retrieval of the pretrained and of randomly initialised encoders, side by side.
#   bash script_demo.sh [--out demo_output] [--smallest] [--no-plots]
set -euo pipefail
cd "$(dirname "$0")"
exec "${PYTHON:-python}" demo.py "$@"
