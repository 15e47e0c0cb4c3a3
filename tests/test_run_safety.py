"""Pretraining never loses work silently: a used checkpoint folder, a folder another run holds, stray
temporaries, a full disk, file permissions, signals, a finished run and impossible flags each end in one
line and a definite exit status, with every earlier file left as it was."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import common.io as cio
import main_moco_inter_skeleton as pretrain
from feeders.datasets import PretrainDataset
from tests.helpers import (
    PRETRAIN_TINY,
    ROOT,
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


def pretrain_argv(data_root: Path, out: Path, *extra: str) -> list[str]:
    """The command line of a tiny run like :func:`tests.helpers.pretrain_main`'s, for a run in its own process."""
    where = ["--data-root", str(data_root), "--protocol", "cross_view", "--checkpoint-path", str(out)]
    return [*where, "-b", "4", "--moco-k", "16", *PRETRAIN_TINY, *extra]


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
    # a run of other model options could not continue it: --resume is not suggested
    assert run(data_root, out, "--epochs", "3", "--gru-hidden-size", "16", "--mlp") == 2
    assert error_line(capsys) == (
        f"--checkpoint-path {out} already holds the checkpoints of a run of other --gru-hidden-size, --mlp "
        "(checkpoint_last.pth.tar: 2 of 2 epochs done): choose another --checkpoint-path, or pass --overwrite to "
        "delete them"
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
    # as the reference writes it: no options recorded, so the misfit shows only once the model is built
    reference_style = other / "reference.pth.tar"
    saved = torch.load(other / "checkpoint_last.pth.tar", weights_only=True)
    torch.save({k: saved[k] for k in ("epoch", "state_dict", "optimizer")}, reference_style)
    before = snapshot(out)
    capsys.readouterr()
    assert run(data_root, out, "--epochs", "2", "--overwrite", "--resume", str(reference_style)) == 2
    assert error_line(capsys).startswith(f"--resume {reference_style} does not fit the model these options build")
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
# Stops: signals, kill -9, a data file cut under the workers; finished runs
# -------------------------------------------------------------------------------------------------


def history_of(path: Path) -> list[dict]:
    records = torch.load(path, weights_only=True)["history"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_same_checkpoint(a: Path, b: Path) -> None:
    """Model, queues, optimizer, generator states and history bit-identical."""
    first, second = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert first["epoch"] == second["epoch"] and history_of(a) == history_of(b)
    assert first["state_dict"].keys() == second["state_dict"].keys()
    assert all(torch.equal(v, second["state_dict"][k]) for k, v in first["state_dict"].items())
    momentum = [
        (s["momentum_buffer"], second["optimizer"]["state"][i]["momentum_buffer"])
        for i, s in first["optimizer"]["state"].items()
    ]
    assert momentum and all(torch.equal(x, y) for x, y in momentum)
    assert torch.equal(first["rng"]["torch"], second["rng"]["torch"])


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_at_once_leaving_the_last_epoch_to_resume(data_root, tmp_path, monkeypatch, capsys, sig, code):
    """SIGTERM/SIGINT in epoch 1: exit 128 + N with one line naming the checkpoint of epoch 0, the metrics
    say so, nothing half-written is left, and the resumed run ends bit-identical to one never stopped."""
    assert run(data_root, tmp_path / "straight", "--epochs", "2") == 0
    out, metrics = tmp_path / "ckpt", tmp_path / "m.json"
    calls = patch_step(monkeypatch, 4, signals=(sig,))  # epoch 1, step 1
    assert run(data_root, out, "--epochs", "2", "--metrics-json", str(metrics)) == code
    assert calls["n"] == 4
    last = out / "checkpoint_last.pth.tar"
    name = signal.Signals(sig).name
    assert error_line(capsys) == f"{name}: stopped in epoch 1; continue with --resume {last}"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary, the lock released
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    result = json.loads(metrics.read_text())
    assert result["status"] == "interrupted" and result["epochs_completed"] == 1 and len(result["history"]) == 1
    monkeypatch.undo()
    assert run(data_root, out, "--epochs", "2", "--resume", str(last), "--metrics-json", str(metrics)) == 0
    assert_same_checkpoint(tmp_path / "straight" / "checkpoint_last.pth.tar", last)
    assert json.loads(metrics.read_text())["epochs_completed"] == 2


def test_a_signal_before_the_first_epoch_ends_says_there_is_nothing_to_resume(data_root, tmp_path, monkeypatch, capsys):
    patch_step(monkeypatch, 1, signals=(signal.SIGINT,))
    assert run(data_root, tmp_path / "ckpt", "--epochs", "2") == 130
    assert error_line(capsys) == "SIGINT: stopped in epoch 0; no epoch was completed: start again"
    assert not (tmp_path / "ckpt").exists()  # the folder it created, left empty, is gone


# A run in its own process: "block N" stops after step N (writing MARKER) until a signal ends it; "cut
# SIZE" makes the first clip each worker reads cut the data file to SIZE bytes first.
RUNNER = """
import os, sys, time
import main_moco_inter_skeleton as pretrain
from feeders.datasets import PretrainDataset
mode, value, marker, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
step, read, calls = pretrain.contrastive_step, PretrainDataset.__getitem__, [0]
def blocking(*args, **kwargs):
    out = step(*args, **kwargs)
    calls[0] += 1
    if calls[0] == value:
        open(marker, "w").close()
        time.sleep(600)
    return out
def cutting(self, index):
    os.truncate(self.paths.data, value)
    return read(self, index)
if mode == "block":
    pretrain.contrastive_step = blocking
else:
    PretrainDataset.__getitem__ = cutting
sys.exit(pretrain.main(argv))
"""


def start(tmp_path: Path, mode: str, value: int, argv: list[str]) -> tuple[subprocess.Popen, Path]:
    """RUNNER as a terminal starts a job (setsid: its own process group), with ``argv``."""
    marker = tmp_path / "blocked"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", RUNNER, mode, str(value), str(marker), *argv]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    return proc, marker


def wait_for(proc: subprocess.Popen, marker: Path) -> None:
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached the step"
        time.sleep(0.05)


def test_kill_9_in_an_epoch_resumes_bit_identical(data_root, tmp_path, capsys):
    """kill -9 in epoch 1 of 2; --resume checkpoint_last then ends exactly as a run never stopped: model,
    queues, optimizer, generator states, and a history of every epoch (kept in the checkpoint)."""
    rep = ["--skeleton-representation", "graph-based_and_image-based", "--mlp", "--shuffle-bn", "--seed", "3"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert pretrain_main(data_root, straight, *rep[1:2], "--epochs", "2", *rep[2:]) == 0
    proc, marker = start(tmp_path, "block", 5, pretrain_argv(data_root, killed, *rep, "--epochs", "2"))
    wait_for(proc, marker)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    last = killed / "checkpoint_last.pth.tar"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    metrics = tmp_path / "m.json"
    capsys.readouterr()
    resume = ["--resume", str(last), "--metrics-json", str(metrics)]
    assert pretrain_main(data_root, killed, *rep[1:2], "--epochs", "2", *rep[2:], *resume) == 0
    assert f"=> {killed}: took over the lock of PID {proc.pid}, which is no longer running" in capsys.readouterr().out
    assert_same_checkpoint(straight / "checkpoint_last.pth.tar", last)
    result = json.loads(metrics.read_text())
    assert [r["epoch"] for r in result["history"]] == [0, 1] and result["epochs_completed"] == 2
    assert result["provenance"]["checkpoints"]["--resume"]["path"] == str(last)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_process_group_with_workers_is_one_line(data_root, tmp_path, sig):
    """Ctrl-C (SIGINT to the terminal's process group) or a batch system's SIGTERM with two DataLoader
    workers: one line, 128 + N, no traceback from any process, the workers gone."""
    out = tmp_path / "ckpt"
    proc, marker = start(
        tmp_path,
        "block",
        4,
        pretrain_argv(data_root, out, "--skeleton-representation", "seq-based", "--epochs", "3", "-j", "2"),
    )
    wait_for(proc, marker)
    os.killpg(proc.pid, sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("epoch ")]
    name = signal.Signals(sig).name
    assert lines == [f"{PREFIX}{name}: stopped in epoch 1; continue with --resume {out / 'checkpoint_last.pth.tar'}"], (
        stderr
    )
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no worker is left in the group


def test_a_data_file_cut_under_two_workers_is_one_line_and_no_hang(tmp_path):
    """Each worker's first read cuts the data file short: exit 2 with the file's one line, and the run
    ends (the workers are shut down, never left to block the interpreter's exit)."""
    root = tmp_path / "data"
    write_split(root / "NTU-RGB-D-60-AGCN" / "xview", 12)
    data = root / "NTU-RGB-D-60-AGCN" / "xview" / "train_data_joint.npy"
    full = data.stat().st_size
    out = tmp_path / "ckpt"
    proc, _ = start(
        tmp_path,
        "cut",
        full // 2,
        pretrain_argv(root, out, "--skeleton-representation", "seq-based", "--epochs", "1", "-j", "2"),
    )
    try:
        _, stderr = proc.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("epoch ")]
    assert lines == [
        f"{PREFIX}{data}: cut to {full // 2:,} of its {full:,} bytes while this run was reading it (rewritten in "
        f"place?); make it again with: python data_gen/ntu_gendata.py --dataset ntu60 --data-path <RAW> "
        f"--out-folder {root / 'NTU-RGB-D-60-AGCN'}, then rerun"
    ], stderr
    assert not list(out.glob("*.pth.tar"))


def test_resuming_a_finished_run_says_so_reports_it_and_changes_nothing(data_root, tmp_path, capsys):
    out, metrics = tmp_path / "ckpt", tmp_path / "m.json"
    assert run(data_root, out, "--epochs", "2") == 0
    before = snapshot(out)
    capsys.readouterr()
    last = out / "checkpoint_last.pth.tar"
    assert run(data_root, out, "--epochs", "2", "--resume", str(last), "--metrics-json", str(metrics)) == 0
    assert capsys.readouterr().out.strip() == (
        f"=> nothing to train: {last} already completed --epochs 2 (pass a larger --epochs to train further)"
    )
    assert snapshot(out) == before
    result = json.loads(metrics.read_text())
    assert result["status"] == "completed" and result["epochs_completed"] == 2
    assert result["final"] == {k: v for k, v in result["history"][1].items() if k in ("train_loss", "acc_s1")}
    assert [r["epoch"] for r in result["history"]] == [0, 1] and result["steps_per_epoch"] == 3
    assert result["provenance"]["checkpoints"]["--resume"]["sha256"] == hashlib.sha256(last.read_bytes()).hexdigest()
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
