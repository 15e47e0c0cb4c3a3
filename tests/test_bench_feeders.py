"""bench/bench_feeders.py: runs at a tiny size, and its baseline computes the same evaluation view as ours."""

from __future__ import annotations

import numpy as np

from bench import bench_feeders as bench
from feeders.datasets import DownstreamDataset


def test_baseline_eval_item_equals_ours(tmp_path):
    paths = bench.write_split(tmp_path, clips=4, seed=1)
    data, frames = np.load(paths.data, mmap_mode="r"), np.load(paths.num_frame)
    ours = DownstreamDataset(paths, "clip", train=False)
    for i in range(4):
        np.testing.assert_allclose(ours[i][0].numpy(), bench.baseline_eval_item(data, frames, i), atol=2e-6)
    pair = bench.baseline_pretrain_item(data, frames, 2)
    assert [x.shape for x in pair] == [(64, 150), (3, 64, 25, 2)] * 2


def test_bench_runs_at_tiny_size(capsys):
    assert bench.main(["--clips", "3", "--passes", "1"]) == 0
    out = capsys.readouterr().out
    assert "pretraining pair" in out and "evaluation item" in out and out.count("x\n") == 2
