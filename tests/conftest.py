"""Test-session setup: one thread per process.

The suite runs tiny models where thread start-up and oversubscription cost more than they gain (CI has
2 cores and several tests start subprocesses), so every process of the suite uses a single thread.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)
