"""Cosine KNN against scikit-learn, the auto-encoder, and action_retrieval.py end to end."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

import action_classification
import action_retrieval
from common.io import UsageError
from common.split_folder import DataFileError
from engine.knn import FeatureAutoencoder, cosine_knn_indices, cosine_knn_predict, knn_accuracy, train_autoencoder
from engine.pretrained import load_pretrained_encoder
from feeders.datasets import DownstreamDataset, split_paths
from models import build_encoder
from tests.helpers import (
    PNG_MAGIC,
    TINY,
    eval_argv,
    reference_checkpoint,
    retrieve,
    write_out_of_range_label,
    write_synthetic_split,
)


def _sklearn_predict(train, labels, query, k):
    return KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(train, labels).predict(query)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_matches_sklearn_on_random_features(k, dtype):
    rng = np.random.default_rng(k)
    for _ in range(3):
        train = rng.normal(size=(200, 24)).astype(dtype)
        query = rng.normal(size=(90, 24)).astype(dtype)
        labels = rng.choice([2, 5, 11, 40], size=200)  # sparse label values: classes are mapped, not assumed 0..C-1
        train[7] = 0.0  # a zero vector is at cosine distance 1 from everything, as in sklearn
        ours = cosine_knn_predict(train, labels, query, k, chunk_size=17)  # chunks of uneven size
        np.testing.assert_array_equal(ours, _sklearn_predict(train, labels, query, k))


def test_knn_vote_ties_go_to_the_smallest_label_like_sklearn():
    # Two neighbours with different labels (k=2) and 2-2 ties among four (k=4).
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    labels = np.array([9, 4, 4, 9, 1])
    query = np.array([[1.0, 0.05], [0.05, 1.0], [0.7, 0.7]])
    for k in (2, 4):
        ours = cosine_knn_predict(train, labels, query, k)
        np.testing.assert_array_equal(ours, _sklearn_predict(train, labels, query, k))
    np.testing.assert_array_equal(cosine_knn_predict(train, labels, query, 2), [4, 4, 4])


def test_knn_indices_are_sorted_nearest_first():
    rng = np.random.default_rng(0)
    train, query = rng.normal(size=(50, 8)), rng.normal(size=(10, 8))
    indices = cosine_knn_indices(train, query, 4, chunk_size=3).numpy()
    unit_query = query / np.linalg.norm(query, axis=1, keepdims=True)
    cos = unit_query @ (train / np.linalg.norm(train, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(indices, np.argsort(-cos, axis=1)[:, :4])
    accuracy, predictions = knn_accuracy(train, np.arange(50) % 3, query, np.zeros(10, dtype=int), 1)
    assert accuracy == pytest.approx(np.mean(predictions == 0))
    with pytest.raises(ValueError, match="k must be between 1 and the number of training samples"):
        cosine_knn_indices(train, query, 51)
    with pytest.raises(ValueError, match="feature sizes differ"):
        cosine_knn_indices(train, query[:, :5], 1)


def test_autoencoder_layers_and_iteration_decay():
    model = FeatureAutoencoder(32)
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [
        (32, 1024),
        (1024, 512),
        (512, 125),
        (125, 512),
        (512, 1024),
        (1024, 32),
    ]
    assert [type(m) for m in model.encoder] == [nn.Linear, nn.Tanh] * 3
    assert isinstance(model.decoder[-1], nn.Linear)
    features = torch.randn(130, 32)  # 3 iterations per epoch at batch 64
    untrained = ((FeatureAutoencoder(32)(features)[0] - features) ** 2).mean().item()
    # the reference steps its x0.95 scheduler every iteration: 3 epochs = 9 steps, 4 decays of every 2
    fit = train_autoencoder(features, 3, batch_size=64, lr=1e-3, lr_step="iteration", decay_every=2, progress=False)
    assert fit.lr == pytest.approx(1e-3 * 0.95**4)
    fit_epoch = train_autoencoder(features, 5, batch_size=64, lr=1e-3, lr_step="epoch", decay_every=2, progress=False)
    assert fit_epoch.lr == pytest.approx(1e-3 * 0.95**2)
    assert fit_epoch.train_mse < untrained  # Adam on MSE reduces the reconstruction error
    assert not fit.model.training


def test_retrieval_end_to_end(tmp_path, capsys):
    root = tmp_path / "data"
    names = write_synthetic_split(root, folder="NTU-RGB-D-120-AGCN", split="xsetup")
    pretrained = tmp_path / "checkpoint_0350.pth.tar"
    reference_checkpoint(pretrained, "seq-based_and_image-based")
    features_path = tmp_path / "features" / "feats.npz"
    metrics_path = tmp_path / "metrics.json"
    metrics = retrieve(
        [
            *eval_argv(
                root,
                batch=5,
                seed=3,
                pretrained=pretrained,
                pretrain="seq-based_and_image-based",
                finetune="image-based",
            ),
            "--finetune-dataset",
            "ntu120",
            "--protocol",
            "cross_setup",
            "--knn-neighbours",
            "3",
            "--lr",
            "0.1",
            "--with-autoencoder",
            "--ae-epochs",
            "2",
            "--save-features",
            str(features_path),
            "--metrics-json",
            str(metrics_path),
            "--plot-dir",
            str(tmp_path / "plots"),
        ]
    )

    saved = np.load(features_path)  # no pickle needed
    assert list(saved["train_names"]) == names["train"] and list(saved["val_names"]) == names["val"]
    dim = 4 * 4 * (64 // 16) ** 2  # HCN: hcn_out_channels * 4 * (window / 16) ** 2
    assert saved["train_features"].shape == (12, dim) and saved["val_features"].shape == (6, dim)
    with open(root / "NTU-RGB-D-120-AGCN" / "xsetup" / "val_label.pkl", "rb") as f:
        np.testing.assert_array_equal(saved["val_labels"], pickle.load(f)[1])

    # features = the frozen encoder's knn_eval output on a centre crop of 0.95
    encoder = build_encoder("image-based", 120, **TINY)
    load_pretrained_encoder(encoder, pretrained, "seq-based_and_image-based", "image-based")
    encoder.eval()
    val_set = DownstreamDataset(split_paths(root, "ntu120", "cross_setup", "val"), "clip", train=False)
    clip, _ = val_set[4]
    with torch.no_grad():
        expected = encoder(clip[None], knn_eval=True).reshape(-1).numpy()
    np.testing.assert_allclose(saved["val_features"][4], expected, rtol=1e-5, atol=1e-6)

    sk = _sklearn_predict(saved["train_features"], saved["train_labels"], saved["val_features"], 3)
    on_disk = json.loads(metrics_path.read_text())
    assert on_disk["knn_top1"] == pytest.approx(100.0 * np.mean(sk == saved["val_labels"]))
    assert on_disk["k"] == 3 and on_disk["feature_dim"] == saved["train_features"].shape[1]
    assert 0.0 <= on_disk["knn_top1_autoencoder"] <= 100.0
    assert on_disk["autoencoder"]["epochs"] == 2 and on_disk["autoencoder"]["code_size"] == 125
    assert on_disk["args"]["knn_neighbours"] == 3 and on_disk["seed"] == 3
    assert list(on_disk["provenance"]["data"]) == [str(root / "NTU-RGB-D-120-AGCN" / "xsetup")]
    assert on_disk["provenance"]["checkpoints"]["--pretrained"]["path"] == str(pretrained)
    assert on_disk["provenance"]["world_size"] == 1
    assert metrics["knn_top1"] == pytest.approx(on_disk["knn_top1"])
    assert (tmp_path / "plots" / "tsne.png").read_bytes()[:8] == PNG_MAGIC

    last = [line for line in capsys.readouterr().out.splitlines() if line.strip()][-1]
    assert last.startswith("retrieval image-based on ntu120 cross_setup: KNN (k=3) top-1 ")
    assert "with auto-encoder" in last


def test_retrieval_without_checkpoint_and_errors(tmp_path):
    root = tmp_path / "data"
    write_synthetic_split(root, per_class={"train": 2, "val": 1})
    common = eval_argv(root, batch=8, finetune="seq-based")
    metrics = retrieve(common)  # randomly initialised encoder (the reference allows it)
    assert metrics["num_train"] == 6 and metrics["feature_dim"] == 16  # 2 x GRU hidden size
    with pytest.raises(ValueError, match="--knn-neighbours 7 exceeds the 6 training clips"):
        retrieve([*common, "--knn-neighbours", "7"])
    pretrained = tmp_path / "graph_image.pth.tar"
    reference_checkpoint(pretrained, "graph-based_and_image-based")
    with pytest.raises(UsageError, match=r"holds encoders for graph-based and image-based only, not 'seq-based'"):
        retrieve(
            [
                *common,
                "--pretrained",
                str(pretrained),
                "--pretrain-skeleton-representation",
                "graph-based_and_image-based",
            ]
        )
    (root / "NTU-RGB-D-60-AGCN" / "xview" / "train_label.pkl").unlink()
    with pytest.raises(DataFileError, match=r"train_label\.pkl not found"):
        retrieve(common)


def test_main_exit_codes_and_one_line_errors(tmp_path, capsys):
    root = tmp_path / "data"
    write_synthetic_split(root, per_class={"train": 2, "val": 1})
    common = eval_argv(root, batch=8)
    assert action_retrieval.main(common) == 0
    capsys.readouterr()
    refused = [
        (["--knn-neighbours", "0"], "argument --knn-neighbours: expected a positive integer, got 0"),
        (["--knn-chunk-size", "0"], "argument --knn-chunk-size: expected a positive integer, got 0"),
        (["--ae-epochs", "0"], "argument --ae-epochs: expected a positive integer, got 0"),
        (["--ae-lr", "-1"], "argument --ae-lr: expected a positive number, got -1"),
        (["-b", "-4"], "argument -b/--batch-size: expected a positive integer, got -4"),
        (
            ["--tsne-samples", "2", "--plot-dir", str(tmp_path / "plots")],
            f"the t-SNE plot of --plot-dir needs at least 3 clips: --tsne-samples is 2, "
            f"{root / 'NTU-RGB-D-60-AGCN' / 'xview' / 'val_data_joint.npy'} holds 3",
        ),
        (["--knn-neighbours", "7"], "--knn-neighbours 7 exceeds the 6 training clips"),
    ]
    for extra, message in refused:
        assert action_retrieval.main(common + extra) == 2, extra
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert lines[-1] == f"action_retrieval.py: error: {message}"
    assert not (tmp_path / "plots").exists()


def test_label_out_of_range_is_refused_like_classification(tmp_path, capsys):
    root = tmp_path / "data"
    write_synthetic_split(root, per_class={"train": 2, "val": 2})
    path, name = write_out_of_range_label(root, part="train", index=4, label=75)
    metrics_path = tmp_path / "metrics.json"
    argv = [*eval_argv(root, batch=8), "--metrics-json", str(metrics_path)]
    assert action_retrieval.main(argv) == 2
    message = f"{path}: label 75 of sample {name} is out of range; ntu60 has 60 classes, labels 0 to 59"
    assert capsys.readouterr().err.splitlines() == [f"action_retrieval.py: error: {message}"]
    assert not metrics_path.exists()
    assert action_classification.main([*argv, "--checkpoint-path", str(tmp_path / "ckpt")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"action_classification.py: error: {message}"]


def test_a_data_file_cut_while_a_worker_reads_it_is_one_line_in_both_scripts(tmp_path, monkeypatch, capsys):
    """A DataLoader worker killed by SIGBUS (the training clips' file cut short under it) ends in the
    file's one-line error and status 2 in both evaluation scripts."""
    root = tmp_path / "data"
    write_synthetic_split(root, per_class={"train": 2, "val": 1})
    train_file = root / "NTU-RGB-D-60-AGCN" / "xview" / "train_data_joint.npy"
    full = train_file.stat().st_size
    read = DownstreamDataset.__getitem__

    def cut_then_read(self, i):
        if torch.utils.data.get_worker_info() is None or self.paths.data != train_file:
            return read(self, i)  # never a SIGBUS in the test process
        os.truncate(train_file, full // 2)
        return np.asarray(self.data[len(self) - 1]).sum()  # past the new end of the mapped file: SIGBUS

    monkeypatch.setattr(DownstreamDataset, "__getitem__", cut_then_read)
    argv = [*eval_argv(root, batch=8), "-j", "1"]  # one DataLoader worker: the one that dies
    message = (
        f"{train_file}: cut to {full // 2:,} of its {full:,} bytes while this run was reading it (rewritten "
        f"in place?); make it again with: python data_gen/ntu_gendata.py --dataset ntu60 --data-path <RAW> "
        f"--out-folder {root / 'NTU-RGB-D-60-AGCN'}, then rerun"
    )
    assert action_retrieval.main(argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"action_retrieval.py: error: {message}"
    write_synthetic_split(root, per_class={"train": 2, "val": 1})  # whole again
    assert action_classification.main([*argv, "--checkpoint-path", str(tmp_path / "ckpt")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"action_classification.py: error: {message}"


def test_unusable_checkpoints_and_outputs_are_refused_before_the_run(tmp_path, capsys):
    root = tmp_path / "data"
    write_synthetic_split(root, per_class={"train": 2, "val": 1})
    pretrained = tmp_path / "pair.pth.tar"
    reference_checkpoint(pretrained, "seq-based_and_graph-based")
    checkpoint = torch.load(pretrained, weights_only=True)
    checkpoint["state_dict"]["module.encoder_q.fc.2.bias"][1] = float("inf")  # even in the projection head
    torch.save(checkpoint, pretrained)
    common = eval_argv(root, batch=8, pretrained=pretrained, pretrain="seq-based_and_graph-based", finetune="seq-based")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    for extra, message in (
        (
            [],
            f"--pretrained {pretrained}: module.encoder_q.fc.2.bias holds non-finite values (NaN or infinity); "
            "the weights are unusable",
        ),
        (
            ["--save-features", str(tmp_path / "folder")],
            f"--save-features {tmp_path / 'folder'} is a folder; give a file name",
        ),
        (
            ["--metrics-json", str(tmp_path / "folder")],
            f"--metrics-json {tmp_path / 'folder'} is a folder; give a file name",
        ),
        (
            ["--metrics-json", str(tmp_path / "file" / "m.json")],
            f"--metrics-json {tmp_path / 'file' / 'm.json'} cannot be created: {tmp_path / 'file'} is a file",
        ),
        (["--plot-dir", str(tmp_path / "file")], f"--plot-dir {tmp_path / 'file'} is a file, not a folder"),
    ):
        assert action_retrieval.main([*common, *extra]) == 2, extra
        assert capsys.readouterr().err.splitlines()[-1] == f"action_retrieval.py: error: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "file", "folder", "pair.pth.tar"]
    reference_checkpoint(pretrained, "seq-based_and_graph-based")  # the reference's BiGRU function
    assert action_retrieval.main([*common, "--true-bidirectional-gru"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"action_retrieval.py: error: --pretrained {pretrained} was pretrained with --true-bidirectional-gru off "
        "(here on): pass its own options"
    )
