"""action_classification.py and action_retrieval.py under a 2-process torchrun (gloo, CPU): figures equal a
single process's, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoints import model_state, read_checkpoint
from engine.evaluation import BatchPlan, Clips, evaluate, plan_loader, random_order
from engine.launch import DistContext, launched_by_torchrun
from engine.pretrained import load_pretrained_encoder
from feeders.datasets import DownstreamDataset, split_paths
from models import build_encoder
from tests.helpers import (
    TINY,
    eval_argv,
    graph_checkpoint,
    reference_checkpoint,
    relative_difference,
    retrieve,
    write_synthetic_split,
)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(launched_by_torchrun(), reason="spawns its own torchrun")


def torchrun(script: str, args: list[str], cwd: Path, processes: int = 2) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        str(ROOT / script),
        *args,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    }
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_retrieval_two_processes_equal_one(tmp_path):
    root = tmp_path / "data"
    # 9 training and 3 evaluation clips: the two ranks' shards differ in length
    names = write_synthetic_split(root, per_class={"train": 3, "val": 1})
    pretrained = tmp_path / "pair.pth.tar"
    reference_checkpoint(pretrained, "seq-based_and_graph-based")
    common = [
        *eval_argv(
            root, batch=4, seed=2, pretrained=pretrained, pretrain="seq-based_and_graph-based", finetune="graph-based"
        ),
        "--knn-neighbours",
        "1",
    ]
    single = retrieve([*common, "--save-features", str(tmp_path / "one" / "feats.npz")])

    out = tmp_path / "two"
    proc = torchrun(
        "action_retrieval.py",
        [*common, "--save-features", str(out / "feats.npz"), "--metrics-json", str(out / "metrics.json")],
        tmp_path,
    )
    assert files_under(out) == ["feats.npz", "metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["knn_top1"] == single["knn_top1"]
    assert metrics["num_train"] == 9 and metrics["num_val"] == 3
    assert len(re.findall(r"^retrieval graph-based on ntu60 cross_view: KNN \(k=1\) top-1 ", proc.stdout, re.M)) == 1
    assert "features extracted by 2 processes" in proc.stdout

    one, two = np.load(tmp_path / "one" / "feats.npz"), np.load(out / "feats.npz")
    assert list(two["train_names"]) == names["train"] and list(two["val_names"]) == names["val"]
    for key in ("train_labels", "val_labels"):
        np.testing.assert_array_equal(two[key], one[key])
    for key in ("train_features", "val_features"):  # gathered back in dataset order
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6)


def test_linear_classification_two_processes(tmp_path):
    root = tmp_path / "data"
    write_synthetic_split(root, per_class={"train": 4, "val": 3})  # 12 / 9 clips
    pretrained = tmp_path / "checkpoint_0450.pth.tar"
    encoders = reference_checkpoint(pretrained, "seq-based_and_graph-based")
    ckpt, plots = tmp_path / "ckpt", tmp_path / "plots"
    args = [
        *eval_argv(
            root, batch=4, seed=1, pretrained=pretrained, pretrain="seq-based_and_graph-based", finetune="seq-based"
        ),
        "--finetune-dataset",
        "ntu60",
        "--protocol",
        "cross_view",
        "--epochs",
        "2",
        "--lr",
        "0.1",
    ]
    proc = torchrun(
        "action_classification.py",
        [
            *args,
            "--checkpoint-path",
            str(ckpt),
            "--metrics-json",
            str(tmp_path / "out" / "metrics.json"),
            "--plot-dir",
            str(plots),
        ],
        tmp_path,
    )

    assert "DistributedDataParallel over 2 processes" in proc.stdout
    assert len(re.findall(r"^epoch 1/2 ", proc.stdout, re.M)) == 1  # rank 0 alone prints
    assert len(re.findall(r"^linear seq-based on ntu60 cross_view: best top-1 ", proc.stdout, re.M)) == 1
    written = files_under(ckpt)
    assert [f for f in written if not f.startswith("events.")] == [
        "last_checkpoint.pth.tar",
        "seq-based_checkpoint.pth.tar",
    ]
    assert len(written) == 3  # one TensorBoard writer
    assert files_under(plots) == ["confusion_matrix.png"] and files_under(tmp_path / "out") == ["metrics.json"]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_train"] == 12 and metrics["num_val"] == 9
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 100.0

    # The linear protocol kept the encoder frozen under DDP: only fc differs from the checkpoint.
    best = read_checkpoint(ckpt / "seq-based_checkpoint.pth.tar")
    state = model_state(best, ckpt)
    want = {k: v for k, v in encoders["encoder_q"].items() if not k.startswith("fc.")}
    assert all(torch.equal(state[k], want[k]) for k in want)
    assert best["epoch"] == metrics["best_epoch"]

    # The sharded evaluation's figures are exactly one process's on the saved classifier.
    model = build_encoder("seq-based", 60, **TINY)
    model.load_state_dict(state)
    ctx = DistContext()
    val_set = Clips(str(root), "ntu60", "cross_view", 60, "seq-based", 64, seed=1).open("val", train=False)
    stats, predictions = evaluate(model, plan_loader(val_set, BatchPlan(np.arange(9), 4), 0, ctx), ctx, "eval")
    assert stats["top1"] == metrics["top1"] and stats["top5"] == metrics["top5"]
    assert predictions.shape == (9,)


@pytest.mark.parametrize("processes", [2, 3])
def test_retrieval_train_mode_splits_every_batch_as_data_parallel_does(tmp_path, processes):
    """--feature-mode train under torchrun: every batch of the reference's procedure, the partial last one
    included, is split across the processes as DataParallel's torch.chunk splits it across devices, and
    each piece is normalised with its own statistics."""
    root = tmp_path / "data"
    write_synthetic_split(root, per_class={"train": 3, "val": 2})  # 9 / 6 clips: last batches of 1 and 2
    pretrained = tmp_path / "graph.pth.tar"
    graph_checkpoint(pretrained)
    out = tmp_path / "out"
    torchrun(
        "action_retrieval.py",
        [
            *eval_argv(root, batch=4, seed=3, pretrained=pretrained, pretrain="graph-based", finetune="graph-based"),
            "--feature-mode",
            "train",
            "--save-features",
            str(out / "feats.npz"),
        ],
        tmp_path,
        processes,
    )
    saved = np.load(out / "feats.npz")

    encoder = build_encoder("graph-based", 60, **TINY)
    load_pretrained_encoder(encoder, pretrained, "graph-based", "graph-based")  # left in train mode
    for part, stream in (("train", 0), ("val", 1)):
        dataset = DownstreamDataset(split_paths(root, "ntu60", "cross_view", part), "clip", train=False)
        order = torch.from_numpy(random_order(len(dataset), 3, stream))
        expected = np.zeros((len(order), saved[f"{part}_features"].shape[1]), dtype=np.float32)
        for batch in torch.split(order, 4):
            for piece in torch.chunk(batch, processes):  # DataParallel's scatter of the batch
                with torch.no_grad():
                    expected[piece] = encoder(torch.stack([dataset[int(i)][0] for i in piece]), knn_eval=True).numpy()
        assert relative_difference(saved[f"{part}_features"], expected) <= 1e-3, part
