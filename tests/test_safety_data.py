"""Safety of data handling: folder locks, restricted label unpickling, atomic writers, bad inputs."""
from __future__ import annotations

import errno
import io
import os
import pickle
import pickletools
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import locking, safe_pickle
from common.locking import LOCK_NAME, FolderLock, LockHeld
from data_gen import writer as writer_module
from data_gen.writer import DataGenError, RunOutputs, check_path_component

ROOT = Path(__file__).resolve().parents[1]

# A child process that takes the lock, says so, then waits for its stdin to close.
_HOLDER = """
import sys
from common.locking import FolderLock
with FolderLock(sys.argv[1], "holder-test"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def _start_holder(folder: Path, use_fcntl: bool = True) -> subprocess.Popen:
    code = _HOLDER if use_fcntl else "import common.locking as m; m.fcntl = None\n" + _HOLDER
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture(params=["flock", "exclusive-create"])
def lock_mode(request, monkeypatch) -> bool:
    """Run a lock test with ``fcntl.flock`` and with the fallback used where ``fcntl`` is missing."""
    use_fcntl = request.param == "flock"
    if not use_fcntl:
        monkeypatch.setattr(locking, "fcntl", None)
    return use_fcntl


def test_lock_file_records_pid_and_purpose_and_is_removed(tmp_path, lock_mode):
    with FolderLock(tmp_path, "data_gen") as lock:
        text = (tmp_path / LOCK_NAME).read_text()
        assert text == f"pid={os.getpid()}\npurpose=data_gen\n"
        assert lock.stale_holder is None
    assert not (tmp_path / LOCK_NAME).exists()
    with FolderLock(tmp_path, "again") as lock:  # free again after release
        assert lock.stale_holder is None


def test_second_process_is_refused_with_holder_pid(tmp_path, lock_mode):
    holder = _start_holder(tmp_path, use_fcntl=lock_mode)
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


def test_lock_of_killed_process_is_taken_over(tmp_path, lock_mode):
    holder = _start_holder(tmp_path, use_fcntl=lock_mode)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdin.close()
    holder.stdout.close()
    assert (tmp_path / LOCK_NAME).exists()  # a killed process leaves its lock file behind
    with FolderLock(tmp_path, "data_gen") as lock:
        assert lock.stale_holder == holder.pid
        assert (tmp_path / LOCK_NAME).read_text() == f"pid={os.getpid()}\npurpose=data_gen\n"
    assert not (tmp_path / LOCK_NAME).exists()


def test_missing_folder_raises_oserror(tmp_path, lock_mode):
    with pytest.raises(FileNotFoundError), FolderLock(tmp_path / "absent", "data_gen"):
        pass


# ---- data_gen.writer ----------------------------------------------------------------------------

ROW = (3, 4, 5, 2)  # a small row shape for writer tests


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *ROW)).astype(np.float32)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_run(out: Path, rows: np.ndarray, capacity: int | None = None, skipped=()) -> dict:
    with RunOutputs(out) as run:
        run.add_part("t", "bench", "train", capacity or len(rows), row_shape=ROW)
        for i, row in enumerate(rows):
            run.append(["t"], f"s{i}", i % 3, row, 10 + i)
        run.stage_skipped(skipped)
        return run.commit()


def test_writer_output_is_what_numpy_writes(tmp_path):
    rows = _rows(3)
    counts = _write_run(tmp_path / "out", rows, capacity=5)  # two rows fewer than planned
    assert counts == {"bench": {"train": 3}}
    folder = tmp_path / "out" / "bench"
    expected = io.BytesIO()
    np.save(expected, rows)
    assert (folder / "train_data_joint.npy").read_bytes() == expected.getvalue()
    assert np.load(folder / "train_num_frame.npy").tolist() == [10, 11, 12]
    assert pickle.loads((folder / "train_label.pkl").read_bytes()) == (["s0", "s1", "s2"], [0, 1, 2])
    assert sorted(_files(tmp_path / "out")) == ["bench/train_data_joint.npy", "bench/train_label.pkl",
                                                "bench/train_num_frame.npy"]


def test_writer_error_removes_only_this_runs_files(tmp_path):
    out = tmp_path / "out"
    _write_run(out, _rows(2))
    (out / "bench" / "train_data_joint.npy.partial-1-abcd").write_bytes(b"not ours")
    before = _files(out)
    with pytest.raises(KeyboardInterrupt), RunOutputs(out) as run:
        run.add_part("t", "bench", "train", 4, row_shape=ROW)
        run.add_part("v", "other", "val", 4, row_shape=ROW)
        run.append(["t", "v"], "x", 1, _rows(1)[0], 5)
        assert len(list(out.rglob("*.partial-*"))) == 3
        raise KeyboardInterrupt
    assert _files(out) == before  # previous outputs and the other file untouched, ours gone
    assert not (out / "other").exists()  # the folder this run created is removed again


def test_writer_refuses_empty_part_before_replacing_anything(tmp_path):
    out = tmp_path / "out"
    _write_run(out, _rows(2))
    before = _files(out)
    with pytest.raises(DataGenError, match=r"bench: no sample was written for train; the existing files"):
        _write_run(out, _rows(0), capacity=3)
    assert _files(out) == before
    with pytest.raises(DataGenError, match="no sample for val"), RunOutputs(out) as run:
        run.add_part("v", "bench", "val", 0, row_shape=ROW)
    assert _files(out) == before


def test_writer_disk_full_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _write_run(out, _rows(2))
    before = _files(out)
    calls = {"n": 0}
    real_write = writer_module._write_bytes

    def write(file, data):
        calls["n"] += 1
        if calls["n"] == 3:  # header, one row, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(file, data)

    monkeypatch.setattr(writer_module, "_write_bytes", write)
    with pytest.raises(DataGenError) as info:
        _write_run(out, _rows(4, seed=1))
    message = str(info.value)
    assert "\n" not in message and "no space left on device" in message
    assert f"{out / 'bench' / 'train_data_joint.npy'}.partial-" in message
    assert _files(out) == before


def test_skipped_list_always_describes_the_last_run(tmp_path):
    out = tmp_path / "out"
    _write_run(out, _rows(2), skipped=[("a.skeleton", "bad line"), ("b.skeleton", "worse")])
    assert (out / "skipped_samples.txt").read_text() == "a.skeleton\tbad line\nb.skeleton\tworse\n"
    _write_run(out, _rows(2))
    assert not (out / "skipped_samples.txt").exists()


def test_output_folder_problems_are_one_line(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataGenError, match=r"file: exists and is not a folder; choose another --out-folder$"):
        RunOutputs(a_file).__enter__()
    with pytest.raises(DataGenError, match=r"part of this path is a file"):
        RunOutputs(a_file / "sub").__enter__()

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(locking.os, "open", refuse)
    with pytest.raises(DataGenError) as info:
        RunOutputs(tmp_path / "locked").__enter__()
    assert str(info.value) == (f"{tmp_path / 'locked'}: not writable (Permission denied); "
                               "choose another --out-folder")
    assert not (tmp_path / "locked").exists()  # created for the run, removed again


def test_writer_refuses_a_locked_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = _start_holder(out)
    try:
        with pytest.raises(DataGenError, match=rf"in use by PID {holder.pid} \(holder-test\)"):
            RunOutputs(out).__enter__()
    finally:
        holder.communicate("")


@pytest.mark.parametrize("name", ["", ".", "..", "../../x", "a/b", "a\\b", "x\0"])
def test_names_from_data_files_must_be_plain_folder_names(name):
    with pytest.raises(DataGenError, match="cannot be a folder name"):
        check_path_component(name, "ann.pkl: 'split'")
    assert check_path_component("xsub", "ann.pkl") == "xsub"


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


@pytest.mark.parametrize("dangerous", [
    (subprocess.call, (["true"],)), (eval, ("1",)), (getattr, ("x", "upper")), (np.load, ("x.npy",)),
])
def test_safe_pickle_refuses_any_other_global(tmp_path, dangerous):
    class Reduce:
        def __reduce__(self):
            return dangerous

    with pytest.raises(safe_pickle.RefusedPickle, match=r"refusing to load '[\w.]+\.\w+'; x$"):
        safe_pickle.loads(pickle.dumps(Reduce()), "f.pkl", "x")


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
        data = data[:pos] + data[pos + 9:]  # frames are optional; their sizes would be wrong after the edit
    if any(op.name == "GLOBAL" for op, _, _ in ops):  # protocols 0-2: "module name" text lines
        return data.replace(old + b".", new + b".")
    for suffix in (b".multiarray", b".numeric"):
        before, after = old + suffix, new + suffix
        data = data.replace(bytes([0x8C, len(before)]) + before, bytes([0x8C, len(after)]) + after)
    return data
