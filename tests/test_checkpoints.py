"""Loading pretrained encoders from MoCo checkpoints in the reference's layout and ours."""
from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from torch import nn

from common.checkpoints import (
    identify_representation,
    load_encoder_weights,
    load_pretrained_encoder,
    pretrained_encoder_state,
)
from common.representations import PAIR_REPRESENTATIONS, parse_representation
from models import build_encoder

TINY = dict(gru_hidden_size=8, gru_layers=1, agcn_base_channels=4, hcn_out_channels=4)
MOCO_DIM = 16
QUEUE = 32


def _randomised(representation: str, seed: int, **sizes) -> nn.Module:
    """A tiny encoder whose every tensor (BatchNorm statistics included) is distinct and seed-dependent."""
    encoder = build_encoder(representation, MOCO_DIM, **{**TINY, **sizes})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in encoder.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif "num_batches_tracked" in name:
                tensor.fill_(seed)
    return encoder


def _with_mlp_head(encoder: nn.Module) -> nn.Module:
    """The reference's --mlp head: fc -> Sequential(Linear(d, d), ReLU, fc); keys fc.0.* / fc.2.*."""
    d = encoder.fc.in_features
    encoder.fc = nn.Sequential(nn.Linear(d, d), nn.ReLU(), encoder.fc)
    return encoder


def reference_checkpoint(path, pretrain_representation: str, mlp: bool = True, prefix: str = "module.",
                         seed: int = 0, extra: dict | None = None, **sizes) -> dict[str, dict[str, torch.Tensor]]:
    """Write a checkpoint laid out like the reference's MoCo pretraining output (DataParallel keys, key
    encoders, queues, optimizer); return each slot's encoder state (head included) for comparison."""
    representations = parse_representation(pretrain_representation)
    slots = ("encoder_q", "encoder_k") if len(representations) == 1 else ("encoder_q", "encoder_k", "encoder_r", "encoder_l")
    state: dict[str, torch.Tensor] = {}
    encoders = {}
    for i, slot in enumerate(slots):
        encoder = _randomised(representations[i // 2], seed * 10 + i, **sizes)
        if mlp:
            encoder = _with_mlp_head(encoder)
        encoders[slot] = encoder.state_dict()
        state.update({f"{prefix}{slot}.{k}": v for k, v in encoder.state_dict().items()})
    if len(representations) == 1:
        state[f"{prefix}queue"] = torch.randn(MOCO_DIM, QUEUE)
        state[f"{prefix}queue_ptr"] = torch.zeros(1, dtype=torch.long)
    else:
        for s in ("S1", "S2"):
            state[f"{prefix}Queue_{s}"] = torch.randn(MOCO_DIM, QUEUE)
            state[f"{prefix}queue_ptr_{s}"] = torch.zeros(1, dtype=torch.long)
    checkpoint = {"epoch": 451, "state_dict": state,
                  "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": [0, 1]}]}}
    checkpoint.update(extra or {})
    torch.save(checkpoint, path)
    return encoders


def _encoder_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _assert_loaded(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = _encoder_part(model.state_dict())
    want = _encoder_part(expected)
    assert sorted(got) == sorted(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("pair", PAIR_REPRESENTATIONS)
def test_reference_layout_picks_query_encoder_of_each_representation(tmp_path, pair):
    path = tmp_path / "checkpoint_0450.pth.tar"
    encoders = reference_checkpoint(path, pair, mlp=True)
    first, second = parse_representation(pair)
    for representation, slot, other in ((first, "encoder_q", "encoder_k"), (second, "encoder_r", "encoder_l")):
        model = build_encoder(representation, 60, **TINY)
        head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
        returned = load_pretrained_encoder(model, path, pair, representation)
        _assert_loaded(model, encoders[slot])
        # the momentum (key) encoder of the same representation holds different numbers
        key_state = _encoder_part(encoders[other])
        assert any(not torch.equal(model.state_dict()[k], key_state[k]) for k in key_state)
        # the classifier head is the new model's own (60 classes), untouched
        for key, value in head_before.items():
            assert torch.equal(model.state_dict()[key], value)
        assert model.fc.out_features == 60
        assert sorted(returned) == sorted(_encoder_part(encoders[slot]))


def test_linear_head_and_no_module_prefix(tmp_path):
    path = tmp_path / "plain.pth.tar"
    encoders = reference_checkpoint(path, "seq-based_and_graph-based", mlp=False, prefix="")
    model = build_encoder("graph-based", 60, **TINY)
    load_pretrained_encoder(model, path, "seq-based_and_graph-based", "graph-based")
    _assert_loaded(model, encoders["encoder_r"])


@pytest.mark.parametrize("representation", ["seq-based", "graph-based", "image-based"])
def test_intra_skeleton_checkpoint(tmp_path, representation):
    path = tmp_path / "intra.pth.tar"
    encoders = reference_checkpoint(path, representation)
    model = build_encoder(representation, 60, **TINY)
    load_pretrained_encoder(model, path, representation, representation)
    _assert_loaded(model, encoders["encoder_q"])


def test_representation_not_in_pair_names_what_the_checkpoint_holds(tmp_path):
    path = tmp_path / "c.pth.tar"
    reference_checkpoint(path, "seq-based_and_graph-based")
    model = build_encoder("image-based", 60, **TINY)
    with pytest.raises(ValueError) as info:
        load_pretrained_encoder(model, path, "seq-based_and_graph-based", "image-based")
    message = str(info.value)
    assert "not 'image-based'" in message
    assert "holds encoder_q (seq-based), encoder_r (graph-based)" in message


def test_intra_checkpoint_read_as_pair(tmp_path):
    path = tmp_path / "intra.pth.tar"
    reference_checkpoint(path, "graph-based")
    model = build_encoder("image-based", 60, **TINY)
    with pytest.raises(ValueError, match=r"no encoder_r weights.*holds encoder_q \(graph-based\).*intra-skeleton"):
        load_pretrained_encoder(model, path, "graph-based_and_image-based", "image-based")


def test_mislabelled_pair_is_detected_from_the_weights(tmp_path):
    path = tmp_path / "c.pth.tar"
    reference_checkpoint(path, "graph-based_and_image-based")
    model = build_encoder("seq-based", 60, **TINY)
    with pytest.raises(ValueError, match=r"encoder_q holds graph-based weights, not seq-based"):
        load_pretrained_encoder(model, path, "seq-based_and_image-based", "seq-based")


def test_recorded_pretrain_representation_must_agree(tmp_path):
    path = tmp_path / "ours.pth.tar"
    reference_checkpoint(path, "seq-based_and_graph-based", extra={"args": {"skeleton_representation": "seq-based_and_graph-based"}})
    with pytest.raises(ValueError, match=r"pretrained as 'seq-based_and_graph-based' \(recorded in its args\)"):
        pretrained_encoder_state(path, "seq-based_and_image-based", "seq-based")
    assert pretrained_encoder_state(path, "seq-based_and_graph-based", "seq-based")


def test_size_mismatch_names_keys_and_shapes(tmp_path):
    path = tmp_path / "big.pth.tar"
    encoders = reference_checkpoint(path, "seq-based_and_graph-based", gru_hidden_size=12)
    model = build_encoder("seq-based", 60, **TINY)  # hidden 8
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ours = _encoder_part(model.state_dict())
    theirs = _encoder_part(encoders["encoder_q"])
    first_bad = next(k for k in ours if ours[k].shape != theirs[k].shape)
    expected = (f"shape mismatch for {first_bad}: checkpoint ({', '.join(map(str, theirs[first_bad].shape))}) "
                f"vs model ({', '.join(map(str, ours[first_bad].shape))})")
    with pytest.raises(ValueError) as info:
        load_pretrained_encoder(model, path, "seq-based_and_graph-based", "seq-based")
    assert expected in str(info.value)
    assert "--gru-hidden-size" in str(info.value)
    for key, value in model.state_dict().items():  # nothing was copied
        assert torch.equal(value, before[key]), key
    # our checkpoints record the sizes: the error then says which flags to pass
    ours = tmp_path / "ours.pth.tar"
    reference_checkpoint(ours, "seq-based", gru_hidden_size=12, extra={"args": {
        "skeleton_representation": "seq-based", "gru_hidden_size": 12, "gru_layers": 1,
        "agcn_base_channels": 4, "hcn_out_channels": 4, "true_bidirectional_gru": False}})
    with pytest.raises(ValueError, match="It was pretrained with --gru-hidden-size 12 --gru-layers 1 "
                                         "--agcn-base-channels 4 --hcn-out-channels 4"):
        load_pretrained_encoder(model, ours, "seq-based", "seq-based")


def test_window_size_mismatch_warns(tmp_path):
    path = tmp_path / "short_views.pth.tar"
    reference_checkpoint(path, "seq-based", extra={"args": {"skeleton_representation": "seq-based", "window_size": 32}})
    model = build_encoder("seq-based", 60, **TINY)
    with pytest.warns(UserWarning, match=r"pretrained on 32-frame views but is evaluated on 64-frame views; "
                                         r"pass --window-size 32"):
        load_pretrained_encoder(model, path, "seq-based", "seq-based", window_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the matching window, or no window given: silent
        load_pretrained_encoder(model, path, "seq-based", "seq-based", window_size=32)
        load_pretrained_encoder(model, path, "seq-based", "seq-based")


def test_missing_and_unexpected_keys_are_listed():
    model = build_encoder("image-based", 10, **TINY)
    weights = _encoder_part(model.state_dict())
    dropped = next(iter(weights))
    weights.pop(dropped)
    weights["extra.weight"] = torch.zeros(3, 2)
    with pytest.raises(ValueError) as info:
        load_encoder_weights(model, weights, source="test weights")
    message = str(info.value)
    assert f"missing from the checkpoint: {dropped} (" in message
    assert "not in the model: extra.weight (3, 2)" in message


def test_identify_representation():
    for representation in ("seq-based", "graph-based", "image-based"):
        state = build_encoder(representation, 5, **TINY).state_dict()
        assert identify_representation(state) == representation
    assert identify_representation({"something.else": torch.zeros(1)}) is None


def test_missing_unreadable_and_unsafe_checkpoints(tmp_path):
    model = build_encoder("seq-based", 60, **TINY)
    with pytest.raises(FileNotFoundError, match="nope.pth.tar not found"):
        load_pretrained_encoder(model, tmp_path / "nope.pth.tar", "seq-based", "seq-based")
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pth.tar: cannot be read"):
        load_pretrained_encoder(model, garbage, "seq-based", "seq-based")
    unsafe = tmp_path / "unsafe.pth.tar"
    torch.save({"state_dict": {}, "payload": pickle.loads(pickle.dumps(_Payload()))}, unsafe)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_pretrained_encoder(model, unsafe, "seq-based", "seq-based")
    no_state = tmp_path / "no_state.pth.tar"
    torch.save({"epoch": 3}, no_state)
    with pytest.raises(ValueError, match="expected a 'state_dict' entry"):
        load_pretrained_encoder(model, no_state, "seq-based", "seq-based")


class _Payload:
    """An arbitrary Python object: weights_only loading must refuse it."""
