"""An exclusive lock on a folder, so two runs never write into the same output folder at once.

``with FolderLock(folder, purpose) as lock:`` holds ``FOLDER/.skeleton-contrast.lock``, a file that
records the holder's PID and purpose, locked with ``flock`` (``msvcrt.locking`` on Windows). The kernel
drops the lock when the holder dies, even on SIGKILL, so a lock file left behind is known to be stale
and is simply taken over (``lock.stale_holder`` names the PID it recorded). A second live taker gets
:class:`LockHeld`, a :class:`common.io.UsageError` whose one line names the folder and the holder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from common.io import UsageError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

LOCK_NAME = ".skeleton-contrast.lock"
_PID_READ_WAIT_S = 0.5  # a holder writes its PID right after locking; a reader waits this long for it


class LockHeld(UsageError):
    """The folder is locked by another live process; ``str(exc)`` is a one-line message."""

    def __init__(self, folder: Path, holder: int | None, purpose: str | None) -> None:
        self.folder, self.holder, self.purpose = folder, holder, purpose
        who = f"PID {holder}" if holder is not None else "another process"
        what = f" ({purpose})" if purpose else ""
        super().__init__(f"{folder}: in use by {who}{what}; wait for it to finish or stop it, or choose another folder")


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # BlockingIOError (flock) or PermissionError (msvcrt): someone holds it
        return False
    return True


class FolderLock:
    """Context manager: the exclusive lock of ``folder`` (which must exist) for this process."""

    def __init__(self, folder: str | os.PathLike, purpose: str) -> None:
        self.folder = Path(folder)
        self.purpose = purpose
        self.path = self.folder / LOCK_NAME
        self.stale_holder: int | None = None
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                os.close(fd)
                raise LockHeld(self.folder, *_read_holder(self.path, _PID_READ_WAIT_S))
            # The previous holder may have removed the file between our open and our lock: a lock on a
            # removed file protects nothing, so start again on the file now at the path.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        self.stale_holder, _ = _read_holder(self.path, 0.0)
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"pid={os.getpid()}\npurpose={self.purpose}\n".encode())
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order: see ``__enter__``)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:  # already gone, or (Windows) not removable while open: the lock still drops
            pass
        finally:
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read_holder(path: Path, wait_s: float) -> tuple[int | None, str | None]:
    """The (PID, purpose) recorded in a lock file, waiting up to ``wait_s`` for the PID to appear."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        pid = fields.get("pid", "")
        if pid.isdigit() or time.monotonic() >= deadline:
            return (int(pid) if pid.isdigit() else None), fields.get("purpose")
        time.sleep(0.02)
