"""Shared utilities: representation parsing, schedules, atomic writes, RNG capture."""
import json
import random

import numpy as np
import pytest
import torch

from common.representations import encoder_name_for, parse_representation
from common.training import (
    accuracy,
    atomic_torch_save,
    capture_rng_state,
    learning_rate_at,
    restore_rng_state,
    write_json_atomic,
)


def test_parse_representation_pairs_and_singles():
    assert parse_representation("seq-based_and_graph-based") == ("seq-based", "graph-based")
    assert parse_representation("graph-based_and_image-based") == ("graph-based", "image-based")
    assert parse_representation("image-based") == ("image-based",)
    with pytest.raises(ValueError, match="seq-based_and_graph-based"):
        parse_representation("graph-based_and_seq-based")


def test_encoder_name_for():
    assert encoder_name_for("seq-based_and_graph-based", "seq-based") == "encoder_q"
    assert encoder_name_for("seq-based_and_graph-based", "graph-based") == "encoder_r"
    assert encoder_name_for("graph-based", "graph-based") == "encoder_q"
    with pytest.raises(ValueError, match="holds encoders for seq-based and graph-based only"):
        encoder_name_for("seq-based_and_graph-based", "image-based")


def test_learning_rate_schedules():
    assert learning_rate_at(0, 0.01, 451, [351], cos=False) == pytest.approx(0.01)
    assert learning_rate_at(350, 0.01, 451, [351], cos=False) == pytest.approx(0.01)
    assert learning_rate_at(351, 0.01, 451, [351], cos=False) == pytest.approx(0.001)
    assert learning_rate_at(75, 0.1, 80, [50, 70], cos=False) == pytest.approx(0.001)
    assert learning_rate_at(50, 1.0, 100, [], cos=True) == pytest.approx(0.5)


def test_accuracy_topk():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    target = torch.tensor([1, 1, 0])
    top1, top2 = accuracy(logits, target, topk=(1, 2))
    assert top1.item() == pytest.approx(100 / 3)
    assert top2.item() == pytest.approx(200 / 3)


def test_atomic_writes_leave_no_partial_file(tmp_path):
    path = tmp_path / "ckpt.pth.tar"
    atomic_torch_save({"a": torch.arange(3)}, path)
    assert torch.load(path, weights_only=True)["a"].tolist() == [0, 1, 2]

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"a": Unpicklable()}, path)
    # the old checkpoint survives and no temporary file is left behind
    assert torch.load(path, weights_only=True)["a"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth.tar"]

    write_json_atomic(tmp_path / "m.json", {"top1": np.float32(0.5), "k": np.int64(3)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"k": 3, "top1": 0.5}


def test_rng_state_round_trip_through_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng_state()
    atomic_torch_save({"rng": state}, tmp_path / "s.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
