"""action_retrieval.py --feature-mode: 'train' is the reference's extraction (the encoder in train mode,
its loaders' batches), checked against a literal re-implementation; 'eval' differs wherever BatchNorm or
dropout does; nothing learned during extraction is kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine import evaluation
from engine.evaluation import Clips
from engine.launch import DistContext
from engine.pretrained import load_pretrained_encoder
from feeders.datasets import DownstreamDataset, split_paths
from models import build_encoder
from tests.helpers import (
    GRAPH_PRETRAIN,
    TINY,
    eval_argv,
    graph_checkpoint,
    reference_checkpoint,
    relative_difference,
    retrieve,
    write_synthetic_split,
)


def reference_extraction(encoder: torch.nn.Module, dataset: DownstreamDataset, batches: list[list[int]]) -> np.ndarray:
    """The reference's extraction loop, literally: no eval() call anywhere (a freshly built encoder is in
    train mode), one forward per batch, squeeze, rows stacked in batch order."""
    hidden = None
    for batch in batches:
        clips = torch.stack([dataset[i][0] for i in batch])
        en_hi = encoder(clips, knn_eval=True).squeeze()
        rows = en_hi.detach().cpu().numpy()
        hidden = rows if hidden is None else np.vstack((hidden, rows))
    return hidden


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory):
    """Graph-based retrieval in both modes on 21 training and 21 evaluation clips (batches of 16 + 5)."""
    tmp = tmp_path_factory.mktemp("graph")
    root = tmp / "data"
    write_synthetic_split(root, per_class={"train": 7, "val": 7})
    pretrained = tmp / "graph.pth.tar"
    graph_checkpoint(pretrained)
    common = eval_argv(root, batch=16, seed=5, pretrained=pretrained, pretrain=GRAPH_PRETRAIN, finetune="graph-based")
    out = {}
    for mode in ("train", "eval"):
        metrics = retrieve(
            [
                *common,
                "--feature-mode",
                mode,
                "--save-features",
                str(tmp / f"{mode}.npz"),
                "--metrics-json",
                str(tmp / f"{mode}.json"),
            ]
        )
        out[mode] = (metrics, dict(np.load(tmp / f"{mode}.npz")), json.loads((tmp / f"{mode}.json").read_text()))
    return root, pretrained, out


def _pretrained_graph_encoder(pretrained) -> torch.nn.Module:
    encoder = build_encoder("graph-based", 60, **TINY)
    load_pretrained_encoder(encoder, pretrained, GRAPH_PRETRAIN, "graph-based")
    return encoder


def test_train_mode_equals_the_reference_extraction(graph_run):
    root, pretrained, out = graph_run
    _, saved, on_disk = out["train"]
    encoder = _pretrained_graph_encoder(pretrained)
    assert encoder.training  # as the reference leaves it
    with torch.no_grad():
        # Evaluation clips: the reference's loader keeps the order of its files (os.listdir's hash order),
        # batches of --batch-size; ours is a seeded random order. The rows go back to dataset order.
        val_set = DownstreamDataset(split_paths(root, "ntu60", "cross_view", "val"), "clip", train=False)
        assert len(val_set) == 21
        val_order = evaluation.random_order(21, 5, 1).tolist()
        loader_batches = [val_order[:16], val_order[16:]]
        expected_val = np.empty((21, encoder.fc.in_features), dtype=np.float32)
        expected_val[val_order] = reference_extraction(encoder, val_set, loader_batches)
        # Training clips: shuffled (the reference's loader shuffles), another seeded order.
        train_set = DownstreamDataset(split_paths(root, "ntu60", "cross_view", "train"), "clip", train=False)
        order = evaluation.random_order(21, 5, 0).tolist()
        shuffled = reference_extraction(encoder, train_set, [order[:16], order[16:]])
    expected_train = np.empty_like(shuffled)
    expected_train[order] = shuffled

    assert relative_difference(saved["val_features"], expected_val) <= 1e-3
    assert relative_difference(saved["train_features"], expected_train) <= 1e-3
    assert on_disk["feature_mode"] == "train" and on_disk["args"]["feature_mode"] == "train"
    # The one-batch-at-a-time eval-mode computation is not what the reference computes.
    encoder.eval()
    with torch.no_grad():
        eval_val = reference_extraction(encoder, val_set, [list(range(16)), list(range(16, 21))])
    assert relative_difference(saved["val_features"], eval_val) > 0.05


def test_eval_and_train_modes_differ_on_a_batchnorm_encoder(graph_run):
    _, pretrained, out = graph_run
    (_, train_saved, _), (_, eval_saved, eval_json) = out["train"], out["eval"]
    assert eval_json["feature_mode"] == "eval"
    assert relative_difference(train_saved["val_features"], eval_saved["val_features"]) > 0.05
    encoder = _pretrained_graph_encoder(pretrained).eval()
    val_set = DownstreamDataset(split_paths(graph_run[0], "ntu60", "cross_view", "val"), "clip", train=False)
    with torch.no_grad():
        expected = encoder(torch.stack([val_set[i][0] for i in range(3)]), knn_eval=True).numpy()
    np.testing.assert_allclose(eval_saved["val_features"][:3], expected, rtol=1e-4, atol=1e-5)
    for key in ("train_labels", "val_labels", "train_names", "val_names"):
        np.testing.assert_array_equal(train_saved[key], eval_saved[key])


def test_extraction_in_train_mode_keeps_nothing(tmp_path):
    root = tmp_path / "data"
    write_synthetic_split(root, per_class={"train": 1, "val": 2})
    dataset = Clips(str(root), "ntu60", "cross_view", 60, "graph-based", 64, seed=0).open("val", train=False)
    model = build_encoder("graph-based", 60, **TINY)
    model.eval()
    evaluation.freeze_encoder(model)  # a pinned train() must not keep the batch statistics away
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = DistContext()
    loader = evaluation.plan_loader(dataset, evaluation.BatchPlan(np.arange(6), 4), 0, ctx)
    features = evaluation.outputs_in_order(model, loader, ctx, "test", "train", knn_eval=True)[0].numpy()
    after = model.state_dict()
    assert sorted(after) == sorted(before)
    assert all(torch.equal(after[k], before[k]) for k in before)  # bit-identical, counters included
    assert not any(m.training for m in model.modules())  # modes restored
    with torch.no_grad():
        eval_features = model(torch.stack([dataset[i][0] for i in range(6)]), knn_eval=True).numpy()
    assert relative_difference(features, eval_features) > 0.05  # batch statistics were used
    # Without the restoration the same forward would have moved the running statistics.
    torch.nn.Module.train(model, True)
    with torch.no_grad():
        model(torch.stack([dataset[i][0] for i in range(4)]), knn_eval=True)
    assert not torch.equal(model.state_dict()["data_bn.running_mean"], before["data_bn.running_mean"])


def test_seq_based_features_do_not_depend_on_the_mode(tmp_path):
    root = tmp_path / "data"
    write_synthetic_split(root, per_class={"train": 3, "val": 2})
    common = eval_argv(root, batch=4, seed=2, finetune="seq-based")
    runs = {}
    for mode in ("eval", "train"):
        path = tmp_path / f"{mode}.npz"
        runs[mode] = (retrieve([*common, "--feature-mode", mode, "--save-features", str(path)]), np.load(path))
    (eval_metrics, eval_saved), (train_metrics, train_saved) = runs["eval"], runs["train"]
    for key in ("train_features", "val_features"):  # the BiGRU has neither BatchNorm nor dropout
        np.testing.assert_allclose(train_saved[key], eval_saved[key], rtol=1e-5, atol=1e-6)
    assert train_metrics["knn_top1"] == eval_metrics["knn_top1"]
    assert (train_metrics["feature_mode"], eval_metrics["feature_mode"]) == ("train", "eval")


def test_train_mode_dropout_is_seeded(tmp_path):
    root = tmp_path / "data"
    write_synthetic_split(root, per_class={"train": 2, "val": 2})
    pretrained = tmp_path / "intra.pth.tar"  # fixed weights: only the dropout masks depend on --seed
    reference_checkpoint(pretrained, "image-based")
    common = eval_argv(root, batch=4, pretrained=pretrained, pretrain="image-based", finetune="image-based")

    def features(mode: str, seed: int) -> np.ndarray:
        path = tmp_path / "feats.npz"
        retrieve([*common, "--save-features", str(path), "--feature-mode", mode, "--seed", str(seed)])
        return np.load(path)["val_features"]

    first = features("train", 1)
    np.testing.assert_array_equal(features("train", 1), first)  # HCN's Dropout2d masks come from --seed
    assert relative_difference(features("train", 2), first) > 0.05
    np.testing.assert_array_equal(features("eval", 1), features("eval", 2))  # no dropout in eval mode
    assert relative_difference(features("eval", 1), first) > 0.05


def test_batch_plan_splits_every_batch_as_data_parallel_does():
    """DataParallel scatters each batch with torch.chunk: pieces of ceil(len / devices) rows, fewer pieces
    than devices where the rows run out, the partial last batch included."""
    order = np.array([7, 3, 5, 1, 0, 2, 4, 6, 8, 9, 10, 11, 12, 13])
    for batch_size, world in ((4, 2), (4, 3), (5, 3), (13, 4), (14, 4), (52, 4), (6, 4)):
        plan = evaluation.BatchPlan(order, batch_size)
        assert plan.batches() == [order[s : s + batch_size].tolist() for s in range(0, len(order), batch_size)]
        for rank in range(world):
            expected = [
                pieces[rank].tolist()
                for s in range(0, len(order), batch_size)
                if len(pieces := torch.chunk(torch.from_numpy(order[s : s + batch_size]), world)) > rank
            ]
            assert plan.batches(rank, world) == expected, (batch_size, world, rank)
    # the cases: 14 rows on 4 devices are [4, 4, 4, 2], 52 are [13, 13, 13, 13]
    assert [len(evaluation.BatchPlan(np.arange(14), 64).batches(r, 4)[0]) for r in range(4)] == [4, 4, 4, 2]
    assert [len(evaluation.BatchPlan(np.arange(52), 64).batches(r, 4)[0]) for r in range(4)] == [13] * 4
    plan = evaluation.BatchPlan(np.array([7, 3, 5, 1, 0, 2, 4, 6, 8]), 4)
    np.testing.assert_array_equal(plan.positions(1, 2), [5, 1, 4, 6])
    rows = torch.arange(9.0)[:, None] * 10  # rows produced in plan order
    gathered = evaluation.gather_rows(rows, plan, DistContext())
    np.testing.assert_array_equal(gathered[:, 0].numpy(), [40, 30, 50, 10, 60, 20, 70, 0, 80])


def test_train_mode_batches_mix_classes_as_the_references_do(tmp_path, monkeypatch):
    """The prepared files hold one class after another (as sorted names of one performer would); the
    reference's loader takes its files in hash order, so its evaluation batches mix classes. Ours do by
    default; --eval-order sorted keeps dataset order."""
    root = tmp_path / "data"
    write_synthetic_split(root, per_class={"train": 7, "val": 7})  # 3 classes x 7 clips, class by class
    pretrained = tmp_path / "pair.pth.tar"
    reference_checkpoint(pretrained, "seq-based_and_graph-based")
    common = eval_argv(root, batch=7, seed=4, pretrained=pretrained, pretrain="seq-based_and_graph-based")
    read = DownstreamDataset.__getitem__
    seen: list[tuple[str, int]] = []

    def recording(self, i):
        seen.append((self.paths.data.name, int(self.labels[i])))
        return read(self, i)

    monkeypatch.setattr(DownstreamDataset, "__getitem__", recording)
    composition = {}
    for order in ("random", "sorted"):
        seen.clear()
        retrieve(
            [
                *common,
                "--finetune-skeleton-representation",
                "graph-based",
                "--feature-mode",
                "train",
                "--eval-order",
                order,
            ]
        )
        val = [label for name, label in seen if name.startswith("val")]
        composition[order] = [sorted(set(val[s : s + 7])) for s in range(0, 21, 7)]
        train = [label for name, label in seen if name.startswith("train")]
        assert all(len(set(train[s : s + 7])) > 1 for s in range(0, 21, 7))  # shuffled, as the reference's
    assert composition["sorted"] == [[0], [3], [7]]
    assert all(len(classes) > 1 for classes in composition["random"])
