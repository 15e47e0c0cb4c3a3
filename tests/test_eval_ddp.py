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
from engine.evaluation import evaluate, evaluation_plan, make_dataset, plan_loader
from engine.launch import DistContext, launched_by_torchrun
from engine.pretrained import load_pretrained_encoder
from feeders import DownstreamDataset, split_paths
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


def torchrun(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
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
    ns = type(
        "Args",
        (),
        {
            "data_root": str(root),
            "finetune_dataset": "ntu60",
            "protocol": "cross_view",
            "finetune_skeleton_representation": "seq-based",
            "data_seed": 1,
            "batch_size": 4,
            "workers": 0,
            "window_size": 64,
        },
    )()
    ctx = DistContext()
    val_set = make_dataset(ns, "val", train=False)
    val_loader = plan_loader(val_set, evaluation_plan(len(val_set), 4), ns, ctx)
    stats, predictions = evaluate(model, val_loader, torch.nn.CrossEntropyLoss(), ctx)
    assert stats["top1"] == metrics["top1"] and stats["top5"] == metrics["top5"]
    assert predictions.shape == (9,)


def test_retrieval_train_mode_two_processes_split_batches_like_data_parallel(tmp_path):
    """--feature-mode train under torchrun: every batch of the reference's order is split across the
    processes as DataParallel splits it across devices, each chunk normalised with its own statistics."""
    root = tmp_path / "data"
    write_synthetic_split(root, per_class={"train": 3, "val": 1})  # 9 / 3 clips
    pretrained = tmp_path / "graph.pth.tar"
    graph_checkpoint(pretrained)
    out = tmp_path / "two"
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
    )
    saved = np.load(out / "feats.npz")

    encoder = build_encoder("graph-based", 60, **TINY)
    load_pretrained_encoder(encoder, pretrained, "graph-based", "graph-based")  # left in train mode
    train_order = torch.randperm(9, generator=torch.Generator().manual_seed(3)).tolist()
    for part, order in (("train", train_order), ("val", [0, 1, 2])):
        dataset = DownstreamDataset(split_paths(root, "ntu60", "cross_view", part), "graph-based", train=False)
        expected = np.zeros((len(order), saved[f"{part}_features"].shape[1]), dtype=np.float32)
        for start in range(0, len(order), 4):
            batch = order[start : start + 4]
            for chunk in (batch[:2], batch[2:]):  # rank 0 and rank 1
                if chunk:
                    with torch.no_grad():
                        expected[chunk] = encoder(torch.stack([dataset[i][0] for i in chunk]), knn_eval=True).numpy()
        assert relative_difference(saved[f"{part}_features"], expected) <= 1e-3, part
