"""Loading pretrained encoders from MoCo checkpoints in the reference's layout and ours."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from common.io import UsageError
from engine.pretrained import first_misfit, load_pretrained_encoder
from models import PAIRS, build_encoder, parse_representation
from tests.helpers import TINY, reference_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _encoder_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _assert_loaded(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = _encoder_part(model.state_dict())
    want = _encoder_part(expected)
    assert sorted(got) == sorted(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("pair", PAIRS)
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


def test_representation_not_in_pair_is_refused(tmp_path):
    path = tmp_path / "c.pth.tar"
    reference_checkpoint(path, "seq-based_and_graph-based")
    model = build_encoder("image-based", 60, **TINY)
    with pytest.raises(UsageError, match=r"holds encoders for seq-based and graph-based only, not 'image-based'"):
        load_pretrained_encoder(model, path, "seq-based_and_graph-based", "image-based")


def test_intra_checkpoint_read_as_pair_names_the_missing_slot(tmp_path):
    path = tmp_path / "intra.pth.tar"
    reference_checkpoint(path, "graph-based")
    model = build_encoder("image-based", 60, **TINY)
    with pytest.raises(UsageError) as info:
        load_pretrained_encoder(model, path, "graph-based_and_image-based", "image-based")
    assert str(info.value) == (
        f"--pretrained {path} holds no encoder_r weights (it holds encoder_k, encoder_q); a checkpoint "
        "pretrained as 'graph-based_and_image-based' would: check --pretrain-skeleton-representation"
    )


def test_mislabelled_pair_names_the_slot_and_first_misfit(tmp_path):
    path = tmp_path / "c.pth.tar"
    reference_checkpoint(path, "graph-based_and_image-based")
    model = build_encoder("seq-based", 60, **TINY)
    first = next(iter(model.state_dict()))
    with pytest.raises(UsageError) as info:
        load_pretrained_encoder(model, path, "seq-based_and_image-based", "seq-based")
    assert str(info.value).startswith(
        f"--pretrained {path}: encoder_q does not fit the BIGRU built for seq-based: {first} "
    )
    assert "is missing from the checkpoint" in str(info.value)


def test_recorded_pretrain_representation_must_agree(tmp_path):
    path = tmp_path / "ours.pth.tar"
    reference_checkpoint(
        path, "seq-based_and_graph-based", extra={"args": {"skeleton_representation": "seq-based_and_graph-based"}}
    )
    model = build_encoder("seq-based", 60, **TINY)
    with pytest.raises(UsageError, match=r"pretrained as 'seq-based_and_graph-based' \(recorded in its args\)"):
        load_pretrained_encoder(model, path, "seq-based_and_image-based", "seq-based")
    assert load_pretrained_encoder(model, path, "seq-based_and_graph-based", "seq-based")


def test_a_new_encoder_needs_no_change_to_pretrained_loading():
    """No second registry: loading knows nothing of the encoders (it imports nothing from models/)."""
    import ast
    import inspect

    import engine.pretrained as pt

    imported = [n.module for n in ast.walk(ast.parse(inspect.getsource(pt))) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m and m.split(".")[0] == "models"], imported


def test_size_mismatch_names_keys_and_shapes(tmp_path):
    path = tmp_path / "big.pth.tar"
    encoders = reference_checkpoint(path, "seq-based_and_graph-based", gru_hidden_size=12)
    model = build_encoder("seq-based", 60, **TINY)  # hidden 8
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ours = _encoder_part(model.state_dict())
    theirs = _encoder_part(encoders["encoder_q"])
    first_bad = next(k for k in ours if ours[k].shape != theirs[k].shape)
    expected = (
        f"--pretrained {path}: encoder_q does not fit the BIGRU built for seq-based: {first_bad}: checkpoint "
        f"({', '.join(map(str, theirs[first_bad].shape))}) vs model ({', '.join(map(str, ours[first_bad].shape))}). "
        "The encoder size flags and --window-size must be those of pretraining."
    )
    with pytest.raises(UsageError) as info:
        load_pretrained_encoder(model, path, "seq-based_and_graph-based", "seq-based")
    assert str(info.value) == expected
    for key, value in model.state_dict().items():  # nothing was copied
        assert torch.equal(value, before[key]), key
    # our checkpoints record the sizes: the error then says which flags to pass
    ours = tmp_path / "ours.pth.tar"
    reference_checkpoint(
        ours,
        "seq-based",
        gru_hidden_size=12,
        extra={
            "args": {
                "skeleton_representation": "seq-based",
                "gru_hidden_size": 12,
                "gru_layers": 1,
                "agcn_base_channels": 4,
                "hcn_out_channels": 4,
                "true_bidirectional_gru": False,
            }
        },
    )
    with pytest.raises(
        ValueError,
        match="It was pretrained with --gru-hidden-size 12 --gru-layers 1 --agcn-base-channels 4 --hcn-out-channels 4",
    ):
        load_pretrained_encoder(model, ours, "seq-based", "seq-based")


def test_window_size_mismatch_warns(tmp_path):
    path = tmp_path / "short_views.pth.tar"
    reference_checkpoint(path, "seq-based", extra={"args": {"skeleton_representation": "seq-based", "window_size": 32}})
    model = build_encoder("seq-based", 60, **TINY)
    with pytest.warns(
        UserWarning,
        match=r"pretrained on 32-frame views but is evaluated on 64-frame views; "
        r"pass --window-size 32",
    ):
        load_pretrained_encoder(model, path, "seq-based", "seq-based", window_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the matching window, or no window given: silent
        load_pretrained_encoder(model, path, "seq-based", "seq-based", window_size=32)
        load_pretrained_encoder(model, path, "seq-based", "seq-based")


def test_first_misfit_names_a_missing_then_an_unexpected_key():
    model = build_encoder("image-based", 10, **TINY)
    weights = _encoder_part(model.state_dict())
    assert first_misfit(weights, weights) is None
    dropped = next(iter(weights))
    extra = {**weights, "extra.weight": torch.zeros(3, 2)}
    assert first_misfit(weights, extra) == "extra.weight (3, 2) is not in the model"
    extra.pop(dropped)
    shape = ", ".join(map(str, weights[dropped].shape))
    assert first_misfit(weights, extra) == f"{dropped} ({shape}) is missing from the checkpoint"


def test_missing_unreadable_and_unsafe_checkpoints(tmp_path):
    model = build_encoder("seq-based", 60, **TINY)
    with pytest.raises(UsageError, match=r"^--pretrained: checkpoint .*nope\.pth\.tar not found$"):
        load_pretrained_encoder(model, tmp_path / "nope.pth.tar", "seq-based", "seq-based")
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UsageError, match=r"^--pretrained .*garbage\.pth\.tar: cannot be read"):
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


# -------------------------------------------------------------------------------------------------
# Run checkpoints: reading, resuming, the folder guard
# -------------------------------------------------------------------------------------------------


def test_one_prefix_helper_for_the_whole_project():
    from moco.builder import checkpoint_state_dict, strip_prefix

    assert strip_prefix({"module.a": 1, "b": 2, "module.module.c": 3}) == {"a": 1, "b": 2, "module.c": 3}
    model = build_encoder("seq-based", 5, **TINY)
    assert strip_prefix(checkpoint_state_dict(model)).keys() == model.state_dict().keys()
    sources = [p for p in ROOT.rglob("*.py") if "tests" not in p.parts and ".venv" not in p.parts]
    stripping = [
        p.relative_to(ROOT) for p in sources if re.search(r"len\((CHECKPOINT_PREFIX|\"module\.\")\)", p.read_text())
    ]
    assert stripping == [], stripping  # every other place calls strip_prefix


def test_read_checkpoint_errors_are_one_line(tmp_path):
    from engine.checkpoints import CheckpointError, read_checkpoint

    with pytest.raises(CheckpointError, match=r"^checkpoint .*nope\.pth\.tar not found$"):
        read_checkpoint(tmp_path / "nope.pth.tar")
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match=r"^.*run is a folder, not a checkpoint file; pass a checkpoint file$"):
        read_checkpoint(run)
    torch.save({"epoch": 1}, run / "checkpoint_last.pth.tar")
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(run)
    assert str(err.value) == (
        f"{run} is a folder, not a checkpoint file; pass a file such as {run}/checkpoint_last.pth.tar"
    )
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes((run / "checkpoint_last.pth.tar").read_bytes()[:60])
    unsafe = tmp_path / "unsafe.pth.tar"
    torch.save({"payload": _Payload()}, unsafe)
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint at all")
    for path, reason in [
        (truncated, "PytorchStreamReader failed reading zip archive: failed finding central directory"),
        (unsafe, "Unsupported global: GLOBAL tests.test_checkpoints._Payload was not an allowed global by default"),
        (garbage, "Unsupported operand 110"),
    ]:
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        assert str(err.value) == (
            f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True (truncated, "
            f"not a checkpoint, or holding arbitrary Python objects): {reason}"
        )
    poisoned = tmp_path / "poisoned.pth.tar"
    torch.save({"state_dict": {"module.a": torch.zeros(2), "module.b": torch.tensor([1.0, -float("inf")])}}, poisoned)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(poisoned)
    assert str(err.value) == f"{poisoned}: module.b holds non-finite values (NaN or infinity); the weights are unusable"
    with pytest.raises(CheckpointError, match=r"^--resume .*poisoned.pth.tar: module.b holds non-finite values"):
        read_checkpoint(poisoned, flag="--resume")
    assert read_checkpoint(poisoned, mmap=True)["state_dict"]["module.a"].tolist() == [0, 0]  # mapped: unchecked
    torch.save([1, 2], tmp_path / "list.pth.tar")
    with pytest.raises(CheckpointError, match=r"list\.pth\.tar: expected a dict checkpoint, got list$"):
        read_checkpoint(tmp_path / "list.pth.tar")


def test_one_resume_reader_checks_the_format(tmp_path):
    from engine.checkpoints import (
        CLASSIFIER_FORMAT,
        PRETRAIN_FORMAT,
        CheckpointError,
        read_resume_checkpoint,
    )

    full = {"epoch": 3, "state_dict": {"w": torch.zeros(1)}, "optimizer": {}}
    cases = {
        "ours.pth.tar": {**full, "format": PRETRAIN_FORMAT},
        "reference.pth.tar": full,  # no format entry: accepted by its keys
        "classifier.pth.tar": {**full, "format": CLASSIFIER_FORMAT},
        "newer.pth.tar": {**full, "format": "skeleton-contrast-moco/2"},
        "other.pth.tar": {**full, "format": "someone-else/1"},
        "no_optimizer.pth.tar": {"epoch": 3, "state_dict": {}},
        "bad_epoch.pth.tar": {**full, "epoch": -1},
    }
    for name, content in cases.items():
        torch.save(content, tmp_path / name)
    assert read_resume_checkpoint(tmp_path / "ours.pth.tar", PRETRAIN_FORMAT)["epoch"] == 3
    assert read_resume_checkpoint(tmp_path / "reference.pth.tar", PRETRAIN_FORMAT)["epoch"] == 3
    assert read_resume_checkpoint(tmp_path / "classifier.pth.tar", CLASSIFIER_FORMAT)["epoch"] == 3
    expected = {
        "classifier.pth.tar": "is a classification checkpoint, not a pretraining checkpoint",
        "newer.pth.tar": ": checkpoint format 'skeleton-contrast-moco/2', but this version reads "
        "'skeleton-contrast-moco/1' (written by another version of this code)",
        "other.pth.tar": "is a checkpoint of format 'someone-else/1', not a pretraining checkpoint",
        "no_optimizer.pth.tar": ": not a pretraining checkpoint (no 'optimizer' entry)",
        "bad_epoch.pth.tar": ": 'epoch' entry -1 is not a count of epochs",
    }
    for name, tail in expected.items():
        with pytest.raises(CheckpointError) as err:
            read_resume_checkpoint(tmp_path / name, PRETRAIN_FORMAT)
        assert str(err.value) == f"--resume {tmp_path / name}" + ("" if tail.startswith(":") else " ") + tail
    with pytest.raises(CheckpointError, match=r"is a pretraining checkpoint, not a classification checkpoint$"):
        read_resume_checkpoint(tmp_path / "ours.pth.tar", CLASSIFIER_FORMAT)
    with pytest.raises(CheckpointError, match=r"^--resume: checkpoint .*missing\.pth\.tar not found$"):
        read_resume_checkpoint(tmp_path / "missing.pth.tar", PRETRAIN_FORMAT)
    with pytest.raises(CheckpointError, match=r"^--resume .* is a folder, not a checkpoint file"):
        read_resume_checkpoint(tmp_path, PRETRAIN_FORMAT)


def test_checkpoint_folder_guard(tmp_path):
    from common.io import OutputError
    from engine.run_folder import CLASSIFIER_FILES, check_checkpoint_folder

    run = tmp_path / "run"
    assert check_checkpoint_folder(run, None, False) == []  # not there yet: fine, and not created
    assert not run.exists()
    run.mkdir()
    (run / "events.out.tfevents.1.host").write_bytes(b"x")
    (run / ".checkpoint_last.pth.tar.tmp-1-00000000").write_bytes(b"x")  # a temporary is not a checkpoint
    assert check_checkpoint_folder(run, None, False) == []
    torch.save({"epoch": 1, "args": {"epochs": 10}}, run / "checkpoint_0000.pth.tar")
    torch.save({"epoch": 2, "args": {"epochs": 10}, "config": {"--lr": 1}}, run / "checkpoint_last.pth.tar")
    found = [run / "checkpoint_0000.pth.tar", run / "checkpoint_last.pth.tar"]
    with pytest.raises(UsageError) as err:
        check_checkpoint_folder(run, None, False, config={"--lr": 1, "--new-flag": 3})
    assert str(err.value) == (
        f"--checkpoint-path {run} already holds the checkpoints of a run (checkpoint_last.pth.tar: 2 of 10 "
        f"epochs done); continue it with --resume {run}/checkpoint_last.pth.tar, or "
        "pass --overwrite to delete them and start again"
    )
    # a run of other flags: --resume would be refused, so it is not suggested
    with pytest.raises(UsageError, match=r"a run of other --lr \(checkpoint_last.*: choose another --checkpoint-path"):
        check_checkpoint_folder(run, None, False, config={"--lr": 2})
    assert check_checkpoint_folder(run, run / "checkpoint_last.pth.tar", False) == []  # continued: nothing replaced
    assert check_checkpoint_folder(run, run / "checkpoint_last.pth.tar", True) == []
    assert sorted(check_checkpoint_folder(run, None, True)) == found
    elsewhere = tmp_path / "other" / "checkpoint_last.pth.tar"
    with pytest.raises(
        UsageError, match=r"of another run \(.*\): choose another --checkpoint-path, or pass --overwrite"
    ):
        check_checkpoint_folder(run, elsewhere, False)
    # --overwrite never deletes what another flag reads, nor another kind of run's checkpoints
    with pytest.raises(UsageError, match=r"^--overwrite would delete .*checkpoint_0000.pth.tar, which this run reads"):
        check_checkpoint_folder(run, None, True, keep=("", str(run / "checkpoint_0000.pth.tar")))
    with pytest.raises(UsageError, match=r"holds checkpoint_0000.pth.tar, which this command does not write"):
        check_checkpoint_folder(run, None, True, own=CLASSIFIER_FILES)

    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"^--checkpoint-path .*file is a file, not a folder$"):
        check_checkpoint_folder(tmp_path / "file", None, False)
    with pytest.raises(OutputError, match=r"^--checkpoint-path .*file/run cannot be created: .*file is a file$"):
        check_checkpoint_folder(tmp_path / "file" / "run", None, False)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_checkpoint_folder_guard_unwritable(tmp_path):
    from common.io import OutputError
    from engine.run_folder import check_checkpoint_folder

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(OutputError, match=r"^--checkpoint-path .*locked is not writable$"):
            check_checkpoint_folder(locked, None, False)
        with pytest.raises(OutputError, match=r"locked/run is not writable \(.*locked is not writable\)$"):
            check_checkpoint_folder(locked / "run", None, False)
    finally:
        locked.chmod(0o700)


def test_run_folder_claims_on_rank_0_and_tells_the_other_ranks(tmp_path, monkeypatch):
    import engine.run_folder as rf
    from common.io import UsageError
    from engine.launch import DistContext

    run = tmp_path / "run"
    options = dict(purpose="test", resume=None, overwrite=False)
    rank1 = DistContext(rank=1, world_size=2)
    # another rank touches nothing: it raises when rank 0 says it could not claim, else holds a stand-in
    monkeypatch.setattr(rf, "broadcast_int", lambda value, device: 1)
    with (
        pytest.raises(UsageError, match=f"^rank 0 could not claim --checkpoint-path {run}$"),
        rf.run_folder(rank1, run, **options),
    ):
        pass
    monkeypatch.setattr(rf, "broadcast_int", lambda value, device: 0)
    with rf.run_folder(rank1, run, **options) as claim:
        assert (claim.lock, claim.replaced, claim.notes, claim.discard_previous_run()) == (None, [], [], [])
    assert not run.exists()
    monkeypatch.undo()

    # rank 0 holds the lock for the block; a second claim is refused naming the holder
    with rf.run_folder(DistContext(), run, **options) as claim:
        assert (run / ".skeleton-contrast.lock").read_text() == f"pid={os.getpid()}\npurpose=test\n"
        with pytest.raises(UsageError, match=rf"^--checkpoint-path {run}: in use by PID {os.getpid()} \(test\)"):
            rf.claim_folder(run, **options)
    assert not run.exists()  # created by the claim and left empty by the run: removed with the lock
    with rf.run_folder(DistContext(), run, **options):
        torch.save({"epoch": 1}, run / "checkpoint_last.pth.tar")
    assert [p.name for p in run.iterdir()] == ["checkpoint_last.pth.tar"]  # what the run wrote stays

    # --overwrite: the earlier run's files are listed at the claim and deleted only when asked
    (run / "events.out.tfevents.1.host").write_bytes(b"x")
    with rf.run_folder(DistContext(), run, purpose="test", resume=None, overwrite=True) as claim:
        assert claim.replaced == [run / "checkpoint_last.pth.tar"] and claim.lock is not None
        assert (run / "checkpoint_last.pth.tar").is_file()
        assert claim.discard_previous_run() == [
            f"=> --overwrite: removed 2 checkpoint and TensorBoard files of the previous run in {run}"
        ]
        assert claim.discard_previous_run() == []
    assert run.is_dir() and not list(run.iterdir())  # not created by this claim: the folder stays
