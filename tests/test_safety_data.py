"""Safety of data handling: folder locks, restricted label unpickling, atomic writers, bad inputs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common import locking
from common.locking import LOCK_NAME, FolderLock, LockHeld

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
        with pytest.raises(LockHeld) as info:
            with FolderLock(tmp_path, "data_gen"):
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
    with pytest.raises(FileNotFoundError):
        with FolderLock(tmp_path / "absent", "data_gen"):
            pass
