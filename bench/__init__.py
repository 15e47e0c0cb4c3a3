"""Speed, memory and device benchmarks; each measures its baseline in the same run.

A package so that tests can import the slow literal re-implementations kept here
(``bench.literal_data_gen``); nothing in ``bench`` imports ``tests``. Here: the clips the pretraining
benchmark and the device check train on (no command imports another).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from common.constants import SAMPLE_SHAPE
from common.split_folder import SplitPaths, part_paths


def write_clips(folder: Path, num_clips: int, seed: int = 0) -> SplitPaths:
    """A training part in data_gen's layout with random-walk joints, written through a memory map."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = part_paths(folder, "train")
    rng = np.random.default_rng(seed)
    data = np.lib.format.open_memmap(paths.data, mode="w+", dtype=np.float32, shape=(num_clips, *SAMPLE_SHAPE))
    frames = rng.integers(60, 301, size=num_clips)
    for i, n in enumerate(frames):
        data[i, :, :n] = np.cumsum(rng.normal(0, 0.01, size=(3, n, 25, 2)), axis=1, dtype=np.float32)
    data.flush()
    del data
    np.save(paths.num_frame, frames.astype(np.int64))
    names = [f"S001C001P001R001A{i % 60 + 1:03d}.skeleton" for i in range(num_clips)]
    with open(paths.label, "wb") as f:
        pickle.dump((names, [i % 60 for i in range(num_clips)]), f)
    return paths
