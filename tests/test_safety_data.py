"""Safety of data handling: folder locks, restricted label unpickling, atomic writers, bad inputs."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import pickletools
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from common import locking, safe_pickle
from common.io import UsageError
from common.locking import LOCK_NAME, FolderLock, LockHeld
from common.manifest import verify
from common.split_folder import COMMIT_MARKER, DataFileError, SplitPaths, check_split, part_paths
from data_gen import manifest as manifest_cli
from data_gen import ntu_gendata
from data_gen import pku_gendata as pku
from data_gen import pyskl_convert as pc
from data_gen import writer as writer_module
from data_gen.normalize import MAX_ABS_COORDINATE, normalize_sample, select_bodies
from data_gen.skeleton_reader import SkeletonFormatError, read_skeleton
from data_gen.synthetic import skeleton_text, write_synthetic_ntu
from data_gen.writer import RunOutputs
from feeders.datasets import CheckedLoader, DownstreamDataset, split_paths
from tests.helpers import SPLIT_FILES, plant_stray_temporaries
from tests.test_pku import make_dataset as make_pku_dataset
from tests.test_pyskl import make_pickle as make_pyskl_pickle

ROOT = Path(__file__).resolve().parents[1]

# A child process that takes the lock, says so, then waits for its stdin to close.
_HOLDER = """
import sys
from common.locking import FolderLock
with FolderLock(sys.argv[1], "holder-test"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def _start_holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_file_records_pid_and_purpose_and_is_removed(tmp_path):
    with FolderLock(tmp_path, "data_gen") as lock:
        text = (tmp_path / LOCK_NAME).read_text()
        assert text == f"pid={os.getpid()}\npurpose=data_gen\n"
        assert lock.stale_holder is None
    assert not (tmp_path / LOCK_NAME).exists()
    with FolderLock(tmp_path, "again") as lock:  # free again after release
        assert lock.stale_holder is None


def test_second_process_is_refused_with_holder_pid(tmp_path):
    holder = _start_holder(tmp_path)
    try:
        with pytest.raises(LockHeld) as info, FolderLock(tmp_path, "data_gen"):
            pass
        message = str(info.value)
        assert "\n" not in message
        assert str(tmp_path) in message
        assert f"PID {holder.pid} (holder-test)" in message
        assert info.value.holder == holder.pid
        # Refusal leaves the holder's lock file alone.
        assert (tmp_path / LOCK_NAME).read_text().startswith(f"pid={holder.pid}\n")
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    with FolderLock(tmp_path, "data_gen") as lock:  # released by the holder's clean exit
        assert lock.stale_holder is None


def test_lock_of_killed_process_is_taken_over(tmp_path):
    holder = _start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdin.close()
    holder.stdout.close()
    assert (tmp_path / LOCK_NAME).exists()  # a killed process leaves its lock file behind
    with FolderLock(tmp_path, "data_gen") as lock:
        assert lock.stale_holder == holder.pid
        assert (tmp_path / LOCK_NAME).read_text() == f"pid={os.getpid()}\npurpose=data_gen\n"
    assert not (tmp_path / LOCK_NAME).exists()


def test_missing_folder_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError), FolderLock(tmp_path / "absent", "data_gen"):
        pass


# ---- data_gen.writer ----------------------------------------------------------------------------

ROW = (3, 4, 5, 2)  # a small row shape for writer tests


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *ROW)).astype(np.float32)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included: a temporary or a lock left behind shows)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_run(out: Path, rows: np.ndarray, capacity: int | None = None, skipped: str | None = None) -> dict:
    with RunOutputs(out, "test", tool="test", arguments={}) as run:
        run.part("bench", "train", capacity or len(rows), ROW)
        for i, row in enumerate(rows):
            run.parts["bench", "train"].append(f"s{i}", i % 3, row, 10 + i)
        run.stage_file("skipped_samples.txt", skipped)
        return run.commit()


@pytest.mark.parametrize("capacity", [3, 5])  # every row planned was written / two fewer (header rewritten)
def test_writer_output_is_what_numpy_writes(tmp_path, capacity):
    rows = _rows(3)
    assert _write_run(tmp_path / "out", rows, capacity=capacity) == {"bench": {"train": 3}}
    folder = tmp_path / "out" / "bench"
    expected = io.BytesIO()
    np.save(expected, rows)
    assert (folder / "train_data_joint.npy").read_bytes() == expected.getvalue()
    assert np.load(folder / "train_num_frame.npy").tolist() == [10, 11, 12]
    assert pickle.loads((folder / "train_label.pkl").read_bytes()) == (["s0", "s1", "s2"], [0, 1, 2])
    assert sorted(_files(tmp_path / "out")) == [f"bench/{n}" for n in ("manifest.json", *SPLIT_FILES[:3])]
    manifest = json.loads((folder / "manifest.json").read_text())  # hashed as written: the file's own sha256
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest(), name


def test_an_interrupted_run_removes_its_temporaries_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    _write_run(out, _rows(2))
    (out / "bench" / "notes.txt").write_text("not ours")  # another tool's file stays, through a commit too
    before = _files(out)
    with pytest.raises(KeyboardInterrupt), RunOutputs(out, "test", tool="test", arguments={}) as run:
        run.part("bench", "train", 4, ROW).append("x", 1, _rows(1)[0], 5)
        run.part("other", "val", 4, ROW)
        run.stage_file("skipped_samples.txt", "x\tbad\n")
        staged = [p.name for p in out.iterdir() if p.name.startswith(".")]
        assert len(staged) == 4  # the lock, two staged folders and the list, in the one temporary scheme
        assert all(
            re.fullmatch(rf"\.(bench|other|skipped_samples\.txt)\.tmp-{os.getpid()}-[0-9a-f]{{8}}", n)
            for n in staged
            if n != LOCK_NAME
        )
        raise KeyboardInterrupt
    assert _files(out) == before
    _write_run(out, _rows(3))
    assert (out / "bench" / "notes.txt").read_text() == "not ours"


def test_skipped_list_always_describes_the_last_run(tmp_path):
    out = tmp_path / "out"
    _write_run(out, _rows(2), skipped="a.skeleton\tbad line\nb.skeleton\tworse\n")
    assert (out / "skipped_samples.txt").read_text() == "a.skeleton\tbad line\nb.skeleton\tworse\n"
    _write_run(out, _rows(2))
    assert not (out / "skipped_samples.txt").exists()


class _FullDisk:
    """A file on a disk with ``disk["room"]`` bytes left: writes beyond fail, and so does every later flush
    (as a buffered file's close does when its buffer cannot be written)."""

    def __init__(self, path, mode, disk):
        self._file, self._disk = open(path, mode), disk  # noqa: SIM115

    def write(self, data):
        self._disk["room"] -= len(memoryview(data).cast("B"))
        if self._disk["room"] < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._file.write(data)

    def flush(self):
        if self._disk["room"] < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._file.flush()

    def close(self):
        try:
            self.flush()
        finally:
            self._file.close()

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Full while appending rows / at the first label pickle (after 48 rows of 180,000 bytes, a header, frame counts).
@pytest.mark.parametrize(
    "room, name", [(5_000, "train_data_joint.npy"), (48 * 180_000 + 128 + 224 + 100, "train_label.pkl")]
)
def test_disk_full_is_one_line_naming_the_path_and_leaves_nothing(
    tmp_path, ntu_raw, ntu_clean, capsys, monkeypatch, room, name
):
    """A full disk stops the run with one line naming the file that could not be written, even though
    every flush of clean-up fails too; no temporary is left, the lock is released, the folder unchanged."""
    out = tmp_path / "out"
    assert _ntu(["--data-path", str(ntu_raw), "--out-folder", str(out)], capsys)[0] == 0
    disk = {"room": room}
    monkeypatch.setattr(writer_module, "open", lambda path, mode="r": _FullDisk(path, mode, disk), raising=False)
    code, err = _ntu(["--data-path", str(ntu_raw), "--out-folder", str(out)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert re.fullmatch(
        rf"error: cannot write {re.escape(str(out / 'xsub' / name))}: no space left on device \(or the disk quota is "
        r"reached\); the previous file, if any, is unchanged\n",
        err,
    ), err
    assert _files(out) == ntu_clean


def test_stale_temporaries_are_removed_by_the_next_run_that_locks_the_folder(tmp_path, ntu_raw, ntu_clean, capsys):
    """What a killed run leaves (its staged folders and files, whose writer PID is dead) goes at the next run."""
    out = tmp_path / "out"
    assert _ntu(["--data-path", str(ntu_raw), "--out-folder", str(out)], capsys)[0] == 0
    strays = plant_stray_temporaries(out, "skipped_samples.txt", "xsub")
    strays[1].unlink()
    strays[1].mkdir()
    (strays[1] / "train_data_joint.npy").write_bytes(b"half")
    with pytest.warns(UserWarning, match=rf"{re.escape(str(out))}: removed what an interrupted run left: "):
        assert _ntu(["--data-path", str(ntu_raw), "--out-folder", str(out)], capsys)[0] == 0
    assert _files(out) == ntu_clean and not any(p.exists() for p in strays)


_KILLED_IN_COMMIT = """
import os, signal, sys
from data_gen import ntu_gendata, writer
moves = {"n": 0}
replace = os.replace
def replace_then_die(source, target):
    replace(source, target)
    moves["n"] += 1
    if moves["n"] == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
writer.os.replace = replace_then_die
sys.exit(ntu_gendata.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("moves", [1, 9])  # killed inside the first benchmark folder / inside the second
def test_a_run_killed_between_its_renames_is_refused_until_prepared_again(tmp_path, ntu_raw, ntu_clean, capsys, moves):
    """kill -9 between the renames of the commit: the folder being replaced holds the commit marker, so the
    datasets, the exporters and verify refuse it with one line saying to prepare it again; the next run
    replaces it whole and removes what the killed one left."""
    out = tmp_path / "out"
    assert _ntu(["--data-path", str(ntu_raw), "--out-folder", str(out)], capsys)[0] == 0
    argv = ["--data-path", str(ntu_raw), "--out-folder", str(out), "--no-progress"]
    killed = subprocess.run([sys.executable, "-c", _KILLED_IN_COMMIT, str(moves), *argv], cwd=ROOT, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    mixed = out / ("xsub" if moves < 7 else "xview")
    assert (mixed / COMMIT_MARKER).exists()
    expected = f"{mixed}: a data preparation stopped while it replaced the files here ({COMMIT_MARKER} is left)"
    for refuse in (lambda: check_split(part_paths(mixed, "train")), lambda: verify(mixed)):
        with pytest.raises(DataFileError) as info:
            refuse()
        assert str(info.value).startswith(expected) and "make them again with: " in str(info.value)
    for command in ("verify", "write"):  # nor is a manifest written for files that may come from two runs
        assert manifest_cli.main([command, str(mixed)]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    if moves > 7:
        assert verify(out / "xsub") == []  # the folder replaced before the kill is whole and new
    with pytest.warns(UserWarning, match="removed what an interrupted run left"):
        assert _ntu(["--data-path", str(ntu_raw), "--out-folder", str(out)], capsys)[0] == 0
    assert _files(out) == ntu_clean


def test_output_folder_problems_are_one_line(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UsageError, match=r"^output folder .*file is a file, not a folder$"):
        RunOutputs(a_file, "test", tool="t", arguments={}).__enter__()
    with pytest.raises(UsageError, match=r"cannot be created: a part of its path is a file"):
        RunOutputs(a_file / "sub", "test", tool="t", arguments={}).__enter__()

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(locking.os, "open", refuse)
    with pytest.raises(UsageError) as info:
        RunOutputs(tmp_path / "locked", "test", tool="t", arguments={}).__enter__()
    assert str(info.value) == (
        f"cannot write {tmp_path / 'locked'}: permission denied; the previous file, if any, is unchanged"
    )
    assert not (tmp_path / "locked").exists()  # created for the run, removed again


def test_writer_refuses_a_locked_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = _start_holder(out)
    try:
        with pytest.raises(LockHeld, match=rf"in use by PID {holder.pid} \(holder-test\)"):
            RunOutputs(out, "test", tool="t", arguments={}).__enter__()
    finally:
        holder.communicate("")


# ---- common.safe_pickle -------------------------------------------------------------------------

LABELS_HOLD = "label files hold (names, labels) only"


class _CreatesMarker:
    """Unpickling this with plain pickle would run ``os.system('touch MARKER')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_safe_pickle_refuses_code_and_never_runs_it(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "val_label.pkl"
    path.write_bytes(pickle.dumps((["a"], [0], _CreatesMarker(marker))))
    with pytest.raises(safe_pickle.RefusedPickle) as info:
        safe_pickle.load(path, LABELS_HOLD)
    assert str(info.value) == f"{path}: refusing to load 'posix.system'; label files hold (names, labels) only"
    assert info.value.global_name == "posix.system" and isinstance(info.value, ValueError)
    assert not marker.exists()
    # The same bytes with plain pickle do run the command: the test above can fail.
    pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize(
    "dangerous",
    [
        (subprocess.call, (["true"],)),
        (eval, ("1",)),
        (getattr, ("x", "upper")),
        (np.load, ("x.npy",)),
    ],
)
def test_safe_pickle_refuses_any_other_global(tmp_path, dangerous):
    class Reduce:
        def __reduce__(self):
            return dangerous

    with pytest.raises(safe_pickle.RefusedPickle, match=r"refusing to load '[\w.]+\.\w+'; x$"):
        safe_pickle.loads(pickle.dumps(Reduce()), "f.pkl", "x")


def _reduces_to(func, args) -> bytes:
    class Reduce:
        def __reduce__(self):
            return (func, args)

    return pickle.dumps(Reduce(), protocol=2)


def test_safe_pickle_cannot_be_made_to_allocate_what_the_file_does_not_hold():
    huge = (10**12,)
    _reconstruct = np.zeros(1).__reduce__()[0]  # NumPy's own, wherever this NumPy keeps it
    for data in (_reduces_to(np.ndarray, (huge, "f8")), _reduces_to(_reconstruct, (np.ndarray, huge, b"b"))):
        with pytest.raises(ValueError, match=r"numpy\.ndarray called directly|is not how NumPy pickles an array"):
            safe_pickle.loads(data, "f.pkl", "x")
    with pytest.raises(safe_pickle.RefusedPickle, match=r"refusing to load '(__builtin__|builtins)\.bytearray'"):
        safe_pickle.loads(_reduces_to(bytearray, huge), "f.pkl", "x")


def _label_contents() -> list:
    names = ["S001C001P001R001A001.skeleton", "S001C001P001R001A002.skeleton"]
    return [
        (names, [0, 1]),  # what data_gen writes
        (names, np.array([0, 1], dtype=np.int64)),
        (np.array(names), np.array([0, 1], dtype=np.int32)),  # NumPy str array
        (names, [np.int64(0), np.int64(1)]),  # NumPy scalar labels
        (names, np.array([0, 1], dtype=object)),
        {"names": names, "labels": [0, 1], "dtype": np.dtype("<f4"), "set": {1, 2}, "c": 1 + 2j},
    ]


def _equal(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("numpy_spelling", ["numpy.core", "numpy._core"])
def test_safe_pickle_reads_plain_data_of_numpy_1_and_2(protocol, numpy_spelling):
    other = "numpy._core" if numpy_spelling == "numpy.core" else "numpy.core"
    seen = 0
    for content in _label_contents():
        # NumPy 1 writes numpy.core.*, NumPy 2 numpy._core.*: both must load, whichever NumPy is installed.
        data = _respell(pickle.dumps(content, protocol=protocol), other.encode(), numpy_spelling.encode())
        names = [arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str) and "core" in arg]
        assert all(numpy_spelling in name for name in names)
        seen += len(names)
        assert _equal(safe_pickle.loads(data, "labels.pkl", LABELS_HOLD), content)
    assert seen >= 4  # the numpy contents name at least one numpy module each


def _respell(data: bytes, old: bytes, new: bytes) -> bytes:
    """Replace a module path in a pickle (frames dropped, protocol 4+ string lengths fixed)."""
    ops = list(pickletools.genops(data))
    for _, _, pos in reversed([op for op in ops if op[0].name == "FRAME"]):
        data = data[:pos] + data[pos + 9 :]  # frames are optional; their sizes would be wrong after the edit
    if any(op.name == "GLOBAL" for op, _, _ in ops):  # protocols 0-2: "module name" text lines
        return data.replace(old + b".", new + b".")
    for suffix in (b".multiarray", b".numeric"):
        before, after = old + suffix, new + suffix
        data = data.replace(bytes([0x8C, len(before)]) + before, bytes([0x8C, len(after)]) + after)
    return data


# ---- feeders: label pickles and .npy files ------------------------------------------------------


def _prepared_split(root: Path, clips: int = 4) -> SplitPaths:
    """A tiny prepared val part in the NTU 60 x-view layout, written as data_gen writes it."""
    folder = root / "NTU-RGB-D-60-AGCN" / "xview"
    folder.mkdir(parents=True)
    paths = split_paths(root, "ntu60", "cross_view", "val")
    rng = np.random.default_rng(0)
    np.save(paths.data, rng.standard_normal((clips, 3, 300, 25, 2)).astype(np.float32))
    np.save(paths.num_frame, np.full(clips, 50, dtype=np.int64))
    paths.label.write_bytes(
        pickle.dumps(([f"S001C001P001R001A00{i + 1}.skeleton" for i in range(clips)], list(range(clips))))
    )
    return paths


def test_feeders_refuse_a_label_pickle_that_carries_code(tmp_path):
    paths = _prepared_split(tmp_path)
    marker = tmp_path / "marker"
    paths.label.write_bytes(pickle.dumps((["a"] * 4, [0, 1, 2, 3], _CreatesMarker(marker))))
    with pytest.raises(ValueError) as info:
        check_split(paths)
    assert str(info.value) == (f"{paths.label}: refusing to load 'posix.system'; label files hold (names, labels) only")
    with pytest.raises(ValueError, match=r"refusing to load 'posix\.system'"):
        DownstreamDataset(paths, "sequence", train=False)
    assert not marker.exists()


def test_feeders_read_labels_with_numpy_contents(tmp_path):
    paths = _prepared_split(tmp_path)
    names = np.array([f"S001C001P001R001A00{i + 1}.skeleton" for i in range(4)])
    paths.label.write_bytes(pickle.dumps((names, [np.int64(3), np.int64(2), np.int64(1), np.int64(0)])))
    dataset = DownstreamDataset(paths, "sequence", train=False)
    assert dataset.labels.tolist() == [3, 2, 1, 0] and dataset.names == names.tolist()


@pytest.mark.parametrize("which", ["data", "num_frame", "label"])
def test_feeders_empty_file_is_one_line(tmp_path, which):
    paths = _prepared_split(tmp_path)
    path = getattr(paths, which)
    path.write_bytes(b"")
    with pytest.raises(ValueError) as info:
        check_split(paths)
    kind = "a label pickle" if which == "label" else "a .npy array"
    assert str(info.value) == (
        f"{path}: empty file (0 bytes), not {kind}; make it again with: python "
        f"data_gen/ntu_gendata.py --dataset ntu60 --data-path <RAW> --out-folder "
        f"{tmp_path / 'NTU-RGB-D-60-AGCN'}"
    )


def test_feeders_truncated_npy_is_one_line(tmp_path):
    paths = _prepared_split(tmp_path)
    full = paths.data.stat().st_size
    os.truncate(paths.data, full - 1000)
    with pytest.raises(DataFileError) as info:
        check_split(paths)
    message = str(info.value)
    assert message.startswith(
        f"{paths.data}: truncated: its header declares shape (4, 3, 300, 25, 2) float32 "
        f"({full:,} bytes) but the file has {full - 1000:,} bytes"
    )
    assert "\n" not in message and "make it again with: python data_gen/ntu_gendata.py" in message


@pytest.mark.parametrize("which", ["data", "num_frame"])
@pytest.mark.parametrize("damage", ["longer", "fortran"])
def test_feeders_npy_inconsistent_with_its_header_is_one_line(tmp_path, which, damage):
    """Bytes after the array its header declares, or an array in Fortran order (the memory map would read
    it transposed): not what a data preparation writes; one line saying to prepare it again."""
    paths = _prepared_split(tmp_path)
    path = getattr(paths, which)
    array = np.load(path)
    size = path.stat().st_size
    if damage == "longer":
        path.write_bytes(path.read_bytes() + b"\0" * 64)
        declared = f"its header declares shape {array.shape} {array.dtype} ({size:,} bytes)"
        problem = f"{declared} but the file has {size + 64:,} bytes"
    else:
        with open(path, "r+b") as f:  # the same bytes, declared in Fortran order
            header = f.read(128)
            f.seek(0)
            f.write(header.replace(b"'fortran_order': False", b"'fortran_order': True "))
        problem = "it is not a C-order array of numbers"
    with pytest.raises(DataFileError) as info:
        check_split(paths)
    assert str(info.value) == (
        f"{path}: not written by a data preparation: {problem}; make it again with: python data_gen/ntu_gendata.py "
        f"--dataset ntu60 --data-path <RAW> --out-folder {tmp_path / 'NTU-RGB-D-60-AGCN'}"
    )


def test_feeders_file_cut_during_a_run_is_one_line_not_a_sigbus(tmp_path):
    paths = _prepared_split(tmp_path)
    dataset = DownstreamDataset(paths, "sequence", train=False, input_size=16)
    assert dataset[3][1] == 3  # mapped and readable
    full = paths.data.stat().st_size
    os.truncate(paths.data, full // 2)  # rewritten in place by another program
    expected = (
        f"{paths.data}: cut to {full // 2:,} of its {full:,} bytes while this run was reading it "
        "(rewritten in place?); make it again with: python data_gen/ntu_gendata.py"
    )
    with pytest.raises(DataFileError) as info:
        dataset[3]  # would read past the end of the file: a SIGBUS without the check
    assert str(info.value).startswith(expected)
    with pytest.raises(DataFileError, match="cut to"):
        dataset.check_files()
    # Through a DataLoader worker: the error arrives in the main process and still prints as one line.
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1)
    with pytest.raises(DataFileError) as info:
        list(loader)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


class _CutWhileWorkerReads(DownstreamDataset):
    """Item 3 is read, bypassing the per-item size check, after another program cut the file in half
    (``cut``) or with the file intact (``cut=False``: the worker dies of SIGBUS all the same)."""

    cut = True

    def __getitem__(self, i: int):
        if i != 3:
            return super().__getitem__(i)
        if self.cut:
            os.truncate(self.paths.data, self._data_bytes // 2)
            return float(np.asarray(self.data[3]).sum())  # mapped pages past the new end: SIGBUS
        os.kill(os.getpid(), signal.SIGBUS)
        return 0.0


def test_worker_killed_by_sigbus_on_a_cut_file_is_the_one_line_error(tmp_path):
    paths = _prepared_split(tmp_path)
    full = paths.data.stat().st_size
    dataset = _CutWhileWorkerReads(paths, "sequence", train=False, input_size=16)
    loader = CheckedLoader(dataset, batch_size=2, num_workers=1)
    with pytest.raises(DataFileError) as info:
        list(loader)
    message = str(info.value)
    assert message.startswith(
        f"{paths.data}: cut to {full // 2:,} of its {full:,} bytes while this run was reading it "
        "(rewritten in place?); make it again with: python data_gen/ntu_gendata.py"
    )
    assert "\n" not in message and "DataLoader worker" in str(info.value.__context__)
    # A worker that dies while the files are intact: the DataLoader's own error, unchanged.
    np.save(paths.data, np.zeros((4, 3, 300, 25, 2), dtype=np.float32))
    intact = _CutWhileWorkerReads(paths, "sequence", train=False, input_size=16)
    intact.cut = False
    with pytest.raises(RuntimeError, match=r"^DataLoader worker \(pid") as died:
        list(CheckedLoader(intact, batch_size=2, num_workers=1))
    # torch says "killed by signal: Bus error", then (from it) "exited unexpectedly" or the same again
    assert "killed by signal: Bus error" in f"{died.value} {died.value.__context__}"


# ---- the converters: concurrent runs, empty parts, bad values, bad names, disk full -------------

NTU_OUTPUTS = [
    f"{b}/{part}_{f}"
    for b in ("xsub", "xview")
    for part in ("train", "val")
    for f in ("data_joint.npy", "label.pkl", "num_frame.npy")
]


@pytest.fixture(scope="module")
def ntu_raw(tmp_path_factory) -> Path:
    """24 synthetic NTU files: every part of x-sub and x-view gets samples."""
    folder = tmp_path_factory.mktemp("ntu_raw")
    write_synthetic_ntu(folder, num_classes=4, samples_per_class=6, seed=3)
    return folder


@pytest.fixture(scope="module")
def ntu_clean(tmp_path_factory, ntu_raw) -> dict[str, bytes]:
    """The outputs of an undisturbed run on ``ntu_raw``."""
    out = tmp_path_factory.mktemp("ntu_clean")
    assert ntu_gendata.main(["--data-path", str(ntu_raw), "--out-folder", str(out), "--no-progress"]) == 0
    return _files(out)


def _ntu(argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of ntu_gendata.main; the ``PROG: error: `` prefix becomes ``error: ``."""
    try:
        code = ntu_gendata.main([*argv, "--no-progress"])
    except SystemExit as exit_:
        code = exit_.code
    return code, re.sub(r"^\S+: error: ", "error: ", capsys.readouterr().err)


def _copy_raw(source: Path, target: Path) -> list[Path]:
    target.mkdir(parents=True)
    for path in sorted(source.glob("*.skeleton")):
        (target / path.name).write_bytes(path.read_bytes())
    return sorted(target.glob("*.skeleton"))


# A data_gen run that stops just before its commit (lock held, temporary files written) until its stdin
# gets a line.
_PAUSED_RUN = """
import sys
from data_gen import ntu_gendata, writer
commit = writer.RunOutputs.commit
def paused(self):
    print("committing", flush=True)
    sys.stdin.readline()
    return commit(self)
writer.RunOutputs.commit = paused
sys.exit(ntu_gendata.main(sys.argv[1:]))
"""


def _start_paused_run(raw: Path, out: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_RUN, "--data-path", str(raw), "--out-folder", str(out), "--no-progress"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "committing", proc.stderr.read()
    return proc


def test_two_data_gen_runs_into_one_folder(tmp_path, ntu_raw, ntu_clean):
    out = tmp_path / "out"
    first = _start_paused_run(ntu_raw, out)
    try:
        second = subprocess.run(
            [
                sys.executable,
                "data_gen/ntu_gendata.py",
                "--data-path",
                str(ntu_raw),
                "--out-folder",
                str(out),
                "--no-progress",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        assert second.stderr == (
            f"ntu_gendata.py: error: {out}: in use by PID {first.pid} (data_gen); wait for it "
            "to finish or stop it, or choose another folder\n"
        )
        staged = [p for p in out.iterdir() if re.fullmatch(rf"\.x(sub|view)\.tmp-{first.pid}-\w+", p.name)]
        assert len(staged) == 2  # the first run's staged folders, untouched
    finally:
        _, stderr = first.communicate("\n", timeout=120)
    assert first.returncode == 0, stderr
    assert _files(out) == ntu_clean  # exactly what an undisturbed run writes


def test_lock_of_a_killed_data_gen_run_is_taken_over(tmp_path, ntu_raw, ntu_clean, capsys):
    out = tmp_path / "out"
    killed = _start_paused_run(ntu_raw, out)
    killed.kill()
    killed.communicate()
    staged = sorted(p.name for p in out.iterdir() if p.name.startswith((".xsub.", ".xview.")))
    assert len(staged) == 2 and (out / LOCK_NAME).exists()
    with pytest.warns(UserWarning) as record:
        assert _ntu(["--data-path", str(ntu_raw), "--out-folder", str(out)], capsys)[0] == 0
    assert [str(w.message) for w in record] == [f"{out}: removed what an interrupted run left: {', '.join(staged)}"]
    assert _files(out) == ntu_clean


def test_all_bad_input_leaves_a_good_folder_byte_identical(tmp_path, ntu_raw, ntu_clean, capsys):
    out = tmp_path / "out"
    assert _ntu(["--data-path", str(ntu_raw), "--out-folder", str(out)], capsys)[0] == 0
    raw = tmp_path / "raw"
    for path in _copy_raw(ntu_raw, raw):
        path.write_bytes(path.read_bytes()[:200])  # every file truncated
    code, err = _ntu(["--data-path", str(raw), "--out-folder", str(out), "--skip-bad"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(
        f"error: {raw}: every sample of xsub/train was skipped as bad (first: {raw}/S001C001P001R001A001.skeleton, line"
    )
    assert err.endswith("; nothing was written\n")
    assert _files(out) == ntu_clean


def test_all_ignored_input_is_refused(tmp_path, ntu_raw, ntu_clean, capsys):
    out = tmp_path / "out"
    assert _ntu(["--data-path", str(ntu_raw), "--out-folder", str(out)], capsys)[0] == 0
    listing = tmp_path / "ignored.txt"
    listing.write_text("".join(p.stem + "\n" for p in ntu_raw.glob("*.skeleton")))
    code, err = _ntu(
        ["--data-path", str(ntu_raw), "--out-folder", str(out), "--ignored-sample-path", str(listing)], capsys
    )
    assert code == 2
    assert err == (
        f"error: {ntu_raw}: all 24 .skeleton files are in the ignored-sample list {listing}; nothing was written\n"
    )
    assert _files(out) == ntu_clean


def test_part_without_files_is_refused(tmp_path, ntu_raw, capsys):
    raw = tmp_path / "raw"
    for path in _copy_raw(ntu_raw, raw):
        if "C001" in path.name:  # x-view validation is camera 1
            path.unlink()
    out = tmp_path / "out"
    code, err = _ntu(["--data-path", str(raw), "--out-folder", str(out), "--benchmarks", "xview"], capsys)
    assert code == 2
    assert err == (
        f"error: {raw}: no sample for xview/val; nothing was written (a part without samples cannot be trained "
        "or evaluated on)\n"
    )
    assert not out.exists()


def test_skipped_list_of_an_earlier_run_is_removed(tmp_path, ntu_raw, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    paths = _copy_raw(ntu_raw, raw)
    original = paths[3].read_bytes()
    paths[3].write_bytes(original[:300])
    assert _ntu(["--data-path", str(raw), "--out-folder", str(out), "--skip-bad"], capsys)[0] == 0
    assert (out / "skipped_samples.txt").read_text().startswith(paths[3].name + "\t")
    paths[3].write_bytes(original)
    assert _ntu(["--data-path", str(raw), "--out-folder", str(out), "--skip-bad"], capsys)[0] == 0
    assert not (out / "skipped_samples.txt").exists()


def _set_joint_line(path: Path, value: str) -> int:
    """Replace x of the first joint line of ``path`` with ``value``; returns that line's number."""
    lines = path.read_text().split("\n")
    index = next(i for i, line in enumerate(lines) if len(line.split()) == 12)
    fields = lines[index].split()
    lines[index] = " ".join([value, *fields[1:]])
    path.write_text("\n".join(lines))
    return index + 1


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1e300", "x y z of magnitude at most 8.5e+37 (finite once normalised and stored as float32)"),
        ("-4e38", "x y z of magnitude at most 8.5e+37 (finite once normalised and stored as float32)"),
        ("1e38", "x y z of magnitude at most 8.5e+37 (finite once normalised and stored as float32)"),
        ("inf", "finite x y z"),
    ],
)
def test_ntu_coordinate_beyond_float32_is_a_line_error(tmp_path, ntu_raw, capsys, value, expected):
    raw, out = tmp_path / "raw", tmp_path / "out"
    paths = _copy_raw(ntu_raw, raw)
    line = _set_joint_line(paths[4], value)
    code, err = _ntu(["--data-path", str(raw), "--out-folder", str(out)], capsys)
    assert code == 2
    assert err.startswith(f"error: {paths[4]}, line {line}: expected {expected}, found '{value} ")
    assert not out.exists()
    assert _ntu(["--data-path", str(raw), "--out-folder", str(out), "--skip-bad"], capsys)[0] == 0
    assert (out / "skipped_samples.txt").read_text().startswith(f"{paths[4].name}\t{paths[4]}, line {line}:")
    for part in ("train", "val"):
        assert np.isfinite(np.load(out / "xsub" / f"{part}_data_joint.npy")).all()


def test_largest_accepted_coordinate_stays_finite(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    frames = [[np.arange(75).reshape(25, 3) * 0.01 + 0.01 * t] for t in range(1, 5)]
    largest = 0.9999 * MAX_ABS_COORDINATE  # as written in text, below the limit
    frames[1][0][3] = [largest, -largest, largest]
    path = raw / "S001C001P001R001A001.skeleton"
    path.write_text(skeleton_text(frames, (0,)))
    sample = ntu_gendata.prepare_sample(path)
    assert np.isfinite(sample.data).all() and np.abs(sample.data).max() > 1e37


def test_declared_frame_count_costs_nothing_beyond_the_file(tmp_path):
    few = tmp_path / "few.skeleton"
    few.write_text("300000\n0\n0\n0\n")  # 300,000 frames declared, 3 present
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(SkeletonFormatError) as info:
        read_skeleton(few)
    seconds, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (
        str(info.value) == f"{few}, line 5: expected the body count of frame 4 (an integer), found end of file "
        "(truncated file?)"
    )
    assert peak < 1_000_000 and seconds < 1.0

    many = tmp_path / "S001C001P001R001A001.skeleton"  # 300,000 frames really there, all empty but one
    frames = [[np.arange(75).reshape(25, 3) * 0.01 + 1.0]]
    many.write_text(skeleton_text(frames, (0,)).rstrip("\n").replace("1\n", "300000\n", 1) + "\n0" * 299_999 + "\n")
    tracemalloc.start()
    sample = ntu_gendata.prepare_sample(many)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # The file is 0.6 MB; a dense (4, 300000, 25, 3) float64 array would take 720 MB.
    assert many.stat().st_size < 700_000 and peak < 40_000_000
    assert sample.frames == 300_000 and sample.num_frame == 300 and sample.data.any()
    expected = normalize_sample(select_bodies(read_skeleton(many).bodies))
    np.testing.assert_array_equal(sample.data, expected)


def test_output_folder_that_is_a_file_is_one_line(tmp_path, ntu_raw, capsys):
    out = tmp_path / "out"
    out.write_text("not a folder")
    code, err = _ntu(["--data-path", str(ntu_raw), "--out-folder", str(out)], capsys)
    assert code == 2
    assert err == f"error: --out-folder {out}: {out} is a file, not a folder\n"


def test_output_folder_is_checked_before_the_input_is_read(tmp_path, capsys, monkeypatch):
    """A pyskl pickle can take minutes to load: an --out-folder that cannot be a folder stops the run first."""
    monkeypatch.setattr(pc, "load_annotation_file", lambda path: pytest.fail("the pickle was read first"))
    (tmp_path / "file").write_text("x")
    code, err = _run_capture(pc.main, ["--annotation", "x.pkl", "--out-folder", str(tmp_path / "file" / "out")], capsys)
    assert (
        code == 2
        and err == f"error: --out-folder {tmp_path / 'file' / 'out'}: {tmp_path / 'file'} is a file, not a folder\n"
    )


def _run_capture(main, argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main([*argv, "--no-progress"])
    except SystemExit as exit_:
        code = exit_.code
    return code, re.sub(r"^\S+: error: ", "error: ", capsys.readouterr().err)


def test_pku_coordinate_beyond_float32_and_all_bad_input(tmp_path, capsys):
    ds = make_pku_dataset(tmp_path / "raw")
    out = tmp_path / "out"
    argv = ["--phase", "1", "--data-path", str(ds["skeleton"]), "--out-folder", str(out), "--benchmarks", "xsub"]
    with pytest.warns(UserWarning):
        assert _run_capture(pku.main, argv, capsys)[0] == 0
    before = _files(out)
    video = ds["videos"][2]
    path = ds["skeleton"] / f"{video}.txt"
    lines = path.read_text().splitlines()
    lines[9] = "1e300 " + lines[9].split(" ", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    code, err = _run_capture(pku.main, argv, capsys)
    assert code == 2
    assert err == (
        f"error: {path}, line 10: expected x y z of magnitude at most 8.5e+37 (finite once normalised "
        "and stored as float32), found '1e300'\n"
    )
    assert _files(out) == before
    # --skip-bad with every validation video bad: refused, the good folder stays as it was.
    bad = ds["skeleton"] / f"{ds['videos'][5]}.txt"
    bad.write_text("0.5 0.5\n")
    code, err = _run_capture(pku.main, [*argv, "--skip-bad"], capsys)
    assert code == 2
    assert err == (
        f"error: {ds['skeleton']}: every sample of xsub/val was skipped as bad (first: {path}, "
        "line 10: expected x y z of magnitude at most 8.5e+37 (finite once normalised and stored as "
        "float32), found '1e300'); nothing was written\n"
    )
    assert _files(out) == before


def test_pyskl_pickle_that_carries_code_is_refused(tmp_path, capsys):
    path = tmp_path / "ntu60_3danno.pkl"
    content = make_pyskl_pickle(path)
    marker = tmp_path / "marker"
    content["annotations"][0]["keypoint"] = _CreatesMarker(marker)
    path.write_bytes(pickle.dumps(content))
    code, err = _run_capture(pc.main, ["--annotation", str(path), "--out-folder", str(tmp_path / "out")], capsys)
    assert code == 2
    assert err == (
        f"error: {path}: refusing to load 'posix.system'; a pyskl annotation file holds dicts, lists, "
        "strings, numbers and NumPy arrays only\n"
    )
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("split_name", ["../../x", "a/b", "..", "a\\b"])
def test_pyskl_split_name_never_leaves_the_out_folder(tmp_path, capsys, split_name):
    path = tmp_path / "work" / "ntu60_3danno.pkl"
    path.parent.mkdir()
    content = make_pyskl_pickle(path)
    split = content["split"]
    split[f"{split_name}_train"], split[f"{split_name}_val"] = split["xsub_train"], split["xsub_val"]
    path.write_bytes(pickle.dumps(content))
    out = tmp_path / "work" / "deep" / "out"
    code, err = _run_capture(pc.main, ["--annotation", str(path), "--out-folder", str(out)], capsys)
    assert code == 2
    assert err == (
        f"error: {path}: 'split' key {split_name + '_train'!r}: {split_name!r} cannot be a folder name "
        "(letters, digits, '_' and '-' only)\n"
    )
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ntu60_3danno.pkl", "work"]


def test_pyskl_coordinate_beyond_float32_and_all_skipped(tmp_path, capsys):
    path = tmp_path / "ntu60_3danno.pkl"
    content = make_pyskl_pickle(path)
    out = tmp_path / "out"
    argv = ["--annotation", str(path), "--out-folder", str(out), "--splits", "xsub"]
    with pytest.warns(UserWarning):
        assert _run_capture(pc.main, argv, capsys)[0] == 0
    before = _files(out)
    first = content["annotations"][0]
    first["keypoint"] = first["keypoint"].astype(np.float64)
    first["keypoint"][0, 3, 7, 1] = 1e300
    path.write_bytes(pickle.dumps(content))
    code, err = _run_capture(pc.main, argv, capsys)
    assert code == 2
    assert err == (
        f"error: {path}: annotation {first['frame_dir']!r}: 'keypoint' must hold x y z of magnitude at "
        "most 8.5e+37 (finite once normalised and stored as float32), found 1e+300 (dtype float64)\n"
    )
    assert _files(out) == before
    # --skip-bad: every annotation of xsub/val bad -> refused, nothing replaced
    val = set(content["split"]["xsub_val"])
    for anno in content["annotations"]:
        if anno["frame_dir"] in val:
            anno["keypoint"] = np.full_like(anno["keypoint"], np.nan)
    path.write_bytes(pickle.dumps(content))
    code, err = _run_capture(pc.main, [*argv, "--skip-bad"], capsys)
    assert code == 2
    assert err == (
        f"error: {path}: no sample for xsub/val; nothing was written (a part without samples cannot be trained "
        "or evaluated on)\n"
    )
    assert _files(out) == before
