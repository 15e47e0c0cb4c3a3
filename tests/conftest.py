"""Test-session setup: the repository root importable (the scripts live there), one thread per process.

The suite runs tiny models where thread start-up and oversubscription cost more than they gain (CI has
2 cores and several tests start subprocesses), so every process of the suite uses a single thread.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402  (after the thread settings)

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
