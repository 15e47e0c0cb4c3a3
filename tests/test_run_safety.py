"""Pretraining never loses work silently: a used checkpoint folder, a folder another run holds, stray
temporaries, a full disk, file permissions, signals, a finished run and impossible flags each end in one
line and a definite exit status, with every earlier file left as it was."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import common.io as cio
import main_moco_inter_skeleton as pretrain
from feeders import PretrainDataset
from tests.helpers import (
    assert_strays_removed,
    error_line,
    lock_held_elsewhere,
    patch_step,
    plant_stray_temporaries,
    pretrain_main,
    write_split,
)

PREFIX = "main_moco_inter_skeleton.py: error: "


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_split(root / "NTU-RGB-D-60-AGCN" / "xview", 12)
    return root


def run(data_root: Path, out: Path, *extra: str) -> int:
    """One tiny seq-based run (12 clips, batch 4: 3 steps an epoch)."""
    return pretrain_main(data_root, out, "seq-based", "--seed", "0", *extra)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -------------------------------------------------------------------------------------------------
# A used checkpoint folder
# -------------------------------------------------------------------------------------------------


def test_a_second_run_into_a_used_folder_is_refused_and_touches_nothing(data_root, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert run(data_root, out, "--epochs", "2") == 0
    before = snapshot(out)
    capsys.readouterr()
    assert run(data_root, out, "--epochs", "3") == 2
    assert error_line(capsys) == (
        f"--checkpoint-path {out} already holds the checkpoints of a run (checkpoint_last.pth.tar: 2 of 2 epochs "
        f"done); continue it with --resume {out}/checkpoint_last.pth.tar, or pass --overwrite to delete them and "
        "start again"
    )
    assert snapshot(out) == before


def test_overwrite_replaces_the_previous_run(data_root, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert run(data_root, out, "--epochs", "3", "--save-freq", "1") == 0
    assert sorted(p.name for p in out.glob("checkpoint_0*")) == [
        "checkpoint_0000.pth.tar",
        "checkpoint_0001.pth.tar",
        "checkpoint_0002.pth.tar",
    ]
    capsys.readouterr()
    assert run(data_root, out, "--epochs", "1", "--overwrite") == 0
    printed = capsys.readouterr().out
    assert f"=> --overwrite: removed 5 checkpoint and TensorBoard files of the previous run in {out}" in printed
    # nothing of the 3-epoch run is left to be mistaken for this one's
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("events.")) == [
        "checkpoint_0000.pth.tar",
        "checkpoint_last.pth.tar",
    ]
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    last = torch.load(out / "checkpoint_last.pth.tar", weights_only=True)
    assert last["epoch"] == 1 and last["args"]["epochs"] == 1
    # resuming in the same folder continues that run: --overwrite has nothing to delete then
    first = (out / "checkpoint_0000.pth.tar").read_bytes()
    assert run(data_root, out, "--epochs", "2", "--overwrite", "--resume", str(out / "checkpoint_last.pth.tar")) == 0
    assert "--overwrite: removed" not in capsys.readouterr().out
    assert (out / "checkpoint_0000.pth.tar").read_bytes() == first
    assert torch.load(out / "checkpoint_last.pth.tar", weights_only=True)["epoch"] == 2


def test_overwrite_deletes_nothing_when_the_new_run_cannot_start(data_root, tmp_path, capsys):
    out, other = tmp_path / "ckpt", tmp_path / "other"
    assert run(data_root, out, "--epochs", "1") == 0
    assert run(data_root, other, "--epochs", "1", "--moco-dim", "16") == 0
    before = snapshot(out)
    capsys.readouterr()
    # resuming a 16-d run with the default 8-d head into the used folder: refused after the folder was claimed
    assert run(data_root, out, "--epochs", "2", "--overwrite", "--resume", str(other / "checkpoint_last.pth.tar")) == 2
    assert error_line(capsys).startswith(
        f"--resume {other / 'checkpoint_last.pth.tar'} does not fit the model built from these options"
    )
    assert snapshot(out) == before


def test_checkpoint_path_that_is_a_file_or_under_one(data_root, tmp_path, capsys):
    (tmp_path / "file").write_text("keep me")
    assert run(data_root, tmp_path / "file", "--epochs", "1") == 2
    assert error_line(capsys) == f"--checkpoint-path {tmp_path / 'file'} is a file, not a folder"
    assert run(data_root, tmp_path / "file" / "run", "--epochs", "1") == 2
    assert error_line(capsys) == (
        f"--checkpoint-path {tmp_path / 'file' / 'run'} cannot be created: {tmp_path / 'file'} is a file"
    )
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_checkpoint_path_not_writable(data_root, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert run(data_root, locked, "--epochs", "1") == 2
        assert error_line(capsys) == f"--checkpoint-path {locked} is not writable"
    finally:
        locked.chmod(0o700)


def test_a_folder_another_live_run_holds_is_refused_naming_its_pid(data_root, tmp_path, capsys):
    out = tmp_path / "ckpt"
    out.mkdir()
    with lock_held_elsewhere(out, "pretraining") as holder:
        assert run(data_root, out, "--epochs", "1") == 2
        assert error_line(capsys) == (
            f"--checkpoint-path {out}: in use by PID {holder.pid} (pretraining); wait for "
            "it to finish or stop it, or choose another folder"
        )
        assert [p.name for p in out.iterdir()] == [".skeleton-contrast.lock"]  # the holder's, untouched
    assert run(data_root, out, "--epochs", "1") == 0  # free again once the holder has gone
    assert not (out / ".skeleton-contrast.lock").exists()  # released at the end


def test_stray_temporaries_of_a_killed_run_are_removed_at_start(data_root, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert run(data_root, out, "--epochs", "1") == 0
    strays = plant_stray_temporaries(out, "checkpoint_last.pth.tar", "checkpoint_0001.pth.tar")
    capsys.readouterr()
    assert run(data_root, out, "--epochs", "2", "--resume", str(out / "checkpoint_last.pth.tar")) == 0
    assert_strays_removed(strays, capsys.readouterr().out)


# -------------------------------------------------------------------------------------------------
# Writing: a full disk, file modes
# -------------------------------------------------------------------------------------------------


class _FullDevice:
    """Wraps a file: writes succeed until ``room`` bytes, then fail with ENOSPC."""

    def __init__(self, f, room: int) -> None:
        self._f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def test_disk_full_while_saving_keeps_the_previous_checkpoint(data_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ckpt"
    opened = cio._open_temp

    def filling_up(folder, name):
        f, tmp = opened(folder, name)
        return (_FullDevice(f, 2000) if name == "checkpoint_0001.pth.tar" else f), tmp

    monkeypatch.setattr(cio, "_open_temp", filling_up)
    assert run(data_root, out, "--epochs", "2") == 2
    target = out / "checkpoint_0001.pth.tar"
    assert error_line(capsys) == (
        f"cannot write {target}: no space left on device (or the disk quota is reached); "
        "the previous file, if any, is unchanged"
    )
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("events.")) == [
        "checkpoint_0000.pth.tar",
        "checkpoint_last.pth.tar",
    ]  # no temporary, no partial checkpoint_0001
    assert (out / "checkpoint_last.pth.tar").read_bytes() == (out / "checkpoint_0000.pth.tar").read_bytes()
    assert torch.load(out / "checkpoint_last.pth.tar", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(cio, "_open_temp", opened)
    assert run(data_root, out, "--epochs", "2", "--resume", str(out / "checkpoint_last.pth.tar")) == 0


def test_a_data_file_cut_while_a_worker_reads_it_is_one_line(tmp_path, monkeypatch, capsys):
    """A DataLoader worker killed by SIGBUS (its memory-mapped file cut short under it by another
    program) ends in the file's one-line error and status 2, not in the DataLoader's traceback."""
    root = tmp_path / "data"
    write_split(root / "NTU-RGB-D-60-AGCN" / "xview", 12)
    data = root / "NTU-RGB-D-60-AGCN" / "xview" / "train_data_joint.npy"
    full = data.stat().st_size

    def cut_then_read(self, index):
        assert torch.utils.data.get_worker_info() is not None  # never a SIGBUS in the test process
        os.truncate(data, full // 2)
        return np.asarray(self.data[11]).sum()  # past the new end of the mapped file: SIGBUS

    monkeypatch.setattr(PretrainDataset, "__getitem__", cut_then_read)
    out = tmp_path / "ckpt"
    assert run(root, out, "--epochs", "1", "-j", "1") == 2
    assert error_line(capsys) == (
        f"{data}: cut to {full // 2:,} of its {full:,} bytes while this run was reading it (rewritten in "
        f"place?); make it again with: python data_gen/ntu_gendata.py --dataset ntu60 --data-path <RAW> "
        f"--out-folder {root / 'NTU-RGB-D-60-AGCN'}, then rerun"
    )
    assert not list(out.glob("*.pth.tar"))


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_checkpoints_and_metrics_get_the_umask_mode(data_root, tmp_path, mask, mode):
    previous = os.umask(mask)
    try:
        assert run(data_root, tmp_path / "ckpt", "--epochs", "1", "--metrics-json", str(tmp_path / "m.json")) == 0
    finally:
        os.umask(previous)
    for path in [tmp_path / "m.json", *(tmp_path / "ckpt").glob("*.pth.tar")]:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert json.loads((tmp_path / "m.json").read_text())["status"] == "completed"


# -------------------------------------------------------------------------------------------------
# Signals, finished runs
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_second_signal_stops_at_once_with_128_plus_its_number(data_root, tmp_path, monkeypatch, capsys, sig, code):
    calls = patch_step(monkeypatch, 2, signals=(sig, sig))
    out = tmp_path / "ckpt"
    assert run(data_root, out, "--epochs", "2") == code
    assert calls["n"] == 2
    assert error_line(capsys) == (
        f"second {signal.Signals(sig).name}: stopped at once without saving (no checkpoint was written)"
    )
    assert not list(out.glob("*.pth.tar")) and not list(out.glob(".*tmp*"))
    assert not (out / ".skeleton-contrast.lock").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_exit_status_after_one_sigint_is_130_with_a_checkpoint(data_root, tmp_path, monkeypatch):
    calls = patch_step(monkeypatch, 1, signals=(signal.SIGINT,))
    assert run(data_root, tmp_path / "ckpt", "--epochs", "2") == 130
    assert calls["n"] == 1
    saved = torch.load(tmp_path / "ckpt" / "checkpoint_last.pth.tar", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (0, 1)


def test_resuming_a_finished_run_says_so_and_changes_nothing(data_root, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert run(data_root, out, "--epochs", "2") == 0
    before = snapshot(out)
    capsys.readouterr()
    last = out / "checkpoint_last.pth.tar"
    assert run(data_root, out, "--epochs", "2", "--resume", str(last)) == 0
    assert capsys.readouterr().out.strip() == (
        f"=> nothing to train: {last} already completed --epochs 2 (pass a larger --epochs to train further)"
    )
    assert snapshot(out) == before
    assert run(data_root, out, "--epochs", "1", "--resume", str(last)) == 2
    assert error_line(capsys) == f"--resume {last} has already trained 2 epochs, more than --epochs 1"
    assert run(data_root, out, "--epochs", "2", "--resume", str(out)) == 2
    assert error_line(capsys) == (f"--resume {out} is a folder, not a checkpoint file; pass a file such as {last}")
    assert snapshot(out) == before


def test_a_classifier_checkpoint_is_not_resumed_as_pretraining(data_root, tmp_path, capsys):
    from engine.checkpoints import CLASSIFIER_FORMAT

    out = tmp_path / "ckpt"
    out.mkdir()
    other = out / "last_checkpoint.pth.tar"
    torch.save({"format": CLASSIFIER_FORMAT, "epoch": 1, "state_dict": {}, "optimizer": {}}, other)
    assert run(data_root, out, "--epochs", "2", "--resume", str(other)) == 2
    assert error_line(capsys) == f"--resume {other} is a classification checkpoint, not a pretraining checkpoint"


# -------------------------------------------------------------------------------------------------
# Flags that cannot be right
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--lr", "-1", "argument --lr/--learning-rate: expected a positive number, got -1"),
        ("--epochs", "0", "argument --epochs: expected a positive integer, got 0"),
        ("--batch-size", "0", "argument -b/--batch-size: expected a positive integer, got 0"),
        ("--workers", "-1", "argument -j/--workers: expected an integer >= 0, got -1"),
        ("--moco-m", "1", "argument --moco-m: expected a momentum in [0, 1), got 1"),
        ("--moco-t", "0", "argument --moco-t: expected a positive number, got 0"),
        ("--moco-k", "0", "argument --moco-k: expected a positive integer, got 0"),
        ("--save-freq", "0", "argument --save-freq: expected a positive integer, got 0"),
        ("--momentum", "1.5", "argument --momentum: expected a momentum in [0, 1), got 1.5"),
        ("--wd", "-0.001", "argument --wd/--weight-decay: expected a number >= 0, got -0.001"),
        ("--print-freq", "0", "argument -p/--print-freq: expected a positive integer, got 0"),
        ("--gru-hidden-size", "0", "argument --gru-hidden-size: expected a positive integer, got 0"),
        ("--lr", "nan", "argument --lr/--learning-rate: expected a finite number, got 'nan'"),
    ],
)
def test_impossible_numbers_are_refused_naming_flag_and_value(tmp_path, capsys, flag, value, message):
    argv = ["--skeleton-representation", "seq-based", "--checkpoint-path", str(tmp_path / "ckpt"), flag, value]
    assert pretrain.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"{PREFIX}{message}"
    assert not (tmp_path / "ckpt").exists()


def test_start_epoch_past_the_end_is_refused(data_root, tmp_path, capsys):
    assert run(data_root, tmp_path / "ckpt", "--epochs", "2", "--start-epoch", "2") == 2
    assert error_line(capsys) == "--start-epoch 2 leaves nothing to train with --epochs 2"


# -------------------------------------------------------------------------------------------------
# Pieces tests can call directly
# -------------------------------------------------------------------------------------------------


def test_run_metrics_summarises_the_history():
    import argparse

    args = argparse.Namespace(skeleton_representation="seq-based", epochs=3)
    history = [
        {"epoch": 1, "lr": 0.1, "train_loss": 2.0, "acc_s1": 10.0, "seconds": 1.0},
        {"epoch": 2, "lr": 0.05, "train_loss": 1.5, "acc_s1": 30.0, "seconds": 1.0},
    ]
    result = pretrain.FitResult(history, "completed", None)
    metrics = pretrain.run_metrics(
        args,
        result,
        start_epoch=1,
        steps_per_epoch=3,
        world_size=1,
        device="cpu",
        mode="single device",
        data_seed=7,
        wall_seconds=2.5,
    )
    assert metrics["final"] == {"train_loss": 1.5, "acc_s1": 30.0}
    assert metrics["epochs_completed"] == 3 and metrics["status"] == "completed"
    empty = pretrain.run_metrics(
        args,
        pretrain.FitResult([], "interrupted", signal.SIGTERM),
        start_epoch=1,
        steps_per_epoch=3,
        world_size=1,
        device="cpu",
        mode="single device",
        data_seed=7,
        wall_seconds=0.0,
    )
    assert empty["final"] == {} and empty["epochs_completed"] == 1 and empty["status"] == "interrupted"


def test_meters_accumulate_in_float32_and_average_exactly():
    meters = pretrain.Meters(2)
    losses = [1.5, 2.25, 3.0]
    for i, loss in enumerate(losses):
        # batch of 4: stream 1 ranks the positive first for i + 1 clips, stream 2 for none
        logits1 = torch.tensor([[1.0, 0.0]] * (i + 1) + [[0.0, 1.0]] * (3 - i))
        logits2 = torch.tensor([[0.0, 1.0]] * 4)
        meters.update(torch.tensor(loss), [logits1, logits2])
    assert meters.loss.sum.dtype == torch.float32 and all(m.sum.dtype == torch.float32 for m in meters.acc)
    averages = meters.global_averages(torch.device("cpu"))
    assert averages == {"train_loss": sum(losses) / 3, "acc_s1": (25.0 + 50.0 + 75.0) / 3, "acc_s2": 0.0}
    # an interrupted epoch's sums survive a checkpoint round trip
    again = pretrain.Meters(2)
    again.load_state(meters.state())
    assert again.global_averages(torch.device("cpu")) == averages
