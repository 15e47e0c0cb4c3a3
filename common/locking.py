"""An exclusive lock on a folder, so two runs never write into the same output folder at once.

``FolderLock(folder, purpose)`` creates ``FOLDER/.skeleton-contrast.lock`` holding the owner's PID and
purpose (one ``key=value`` per line) and keeps it for the duration of a ``with`` block::

    with FolderLock(out_folder, "data_gen") as lock:
        if lock.stale_holder is not None:
            print(f"warning: taking over the lock left by PID {lock.stale_holder}")
        ...

A second process entering the same lock gets :class:`LockHeld`, whose message names the folder and the
holder's PID. Where ``fcntl`` exists the lock is an ``flock`` on the lock file: the kernel releases it when
the holder dies (even on SIGKILL), so a leftover file is known to be stale exactly. Without ``fcntl``
(Windows) the file is created with ``O_EXCL`` and a leftover file is stale when its PID is no longer
running; that fallback is best effort (a PID can be reused, and two takers of one stale file can race).

Standard library only, so it can be used from any script of the project.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".skeleton-contrast.lock"

# A holder writes its PID right after taking the lock; a reader that finds the file still empty waits
# this long for it before reporting the PID as unknown.
_PID_READ_WAIT_S = 0.5
# Fallback only: an empty or unreadable lock file this old is a leftover of a crash between create and
# write, not a holder about to write its PID.
_UNREADABLE_STALE_AFTER_S = 10.0


class LockHeld(Exception):
    """The folder is locked by another live process; ``str(exc)`` is a one-line message."""

    def __init__(self, folder: Path, holder: int | None, purpose: str | None) -> None:
        self.folder = folder
        self.holder = holder
        self.purpose = purpose
        who = f"PID {holder}" if holder is not None else "another process (PID not yet written)"
        what = f" ({purpose})" if purpose else ""
        super().__init__(f"{folder}: in use by {who}{what}; wait for it to finish or stop it, or choose another folder")


class FolderLock:
    """Context manager: exclusive lock on ``folder`` for one process (see the module docstring).

    ``folder`` must exist; entering raises ``OSError`` when it does not or is not writable, and
    :class:`LockHeld` when a live process holds the lock.

    Attributes after ``__enter__``: ``path`` (the lock file) and ``stale_holder``, the PID recorded in
    a lock file left by a process that is gone (``None`` when there was no such file), so the caller can
    warn that it is taking that lock over.
    """

    def __init__(self, folder: str | os.PathLike, purpose: str) -> None:
        self.folder = Path(folder)
        self.purpose = purpose
        self.path = self.folder / LOCK_NAME
        self.stale_holder: int | None = None
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this FolderLock is already held")
        self.stale_holder = None
        if fcntl is not None:
            self._acquire_flock()
        else:
            self._acquire_exclusive_create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order: see ``_acquire_flock``)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    # -- fcntl.flock ---------------------------------------------------------------------------------

    def _acquire_flock(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder, purpose = _read_holder(self.path, wait_s=_PID_READ_WAIT_S)
                raise LockHeld(self.folder, holder, purpose) from None
            except BaseException:
                os.close(fd)
                raise
            # The previous holder may have unlinked the file between our open and our flock; a lock on
            # an unlinked file protects nothing, so start again on the file now at the path.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        self.stale_holder, _ = _read_holder(self.path, wait_s=0.0)
        self._fd = fd
        _write_holder(fd, self.purpose)

    # -- fallback: O_EXCL create + PID liveness ------------------------------------------------------

    def _acquire_exclusive_create(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder, purpose = _read_holder(self.path, wait_s=_PID_READ_WAIT_S)
                if not self._is_stale(holder):
                    raise LockHeld(self.folder, holder, purpose) from None
                self._remove_stale(holder)
                continue
            self._fd = fd
            _write_holder(fd, self.purpose)
            return

    def _is_stale(self, holder: int | None) -> bool:
        if holder is not None:
            return not pid_alive(holder)
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > _UNREADABLE_STALE_AFTER_S

    def _remove_stale(self, holder: int | None) -> None:
        # Renaming to a unique name lets only one of several takers remove this file.
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        os.unlink(aside)
        self.stale_holder = holder


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _write_holder(fd: int, purpose: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"pid={os.getpid()}\npurpose={purpose}\n".encode())


def _read_holder(path: Path, wait_s: float) -> tuple[int | None, str | None]:
    """The (PID, purpose) recorded in a lock file; ``(None, None)`` when absent or unreadable."""
    deadline = time.monotonic() + wait_s
    while True:
        holder, purpose = _parse_holder(path)
        if holder is not None or time.monotonic() >= deadline:
            return holder, purpose
        time.sleep(0.02)


def _parse_holder(path: Path) -> tuple[int | None, str | None]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    pid = fields.get("pid", "")
    return (int(pid) if pid.isdigit() else None), fields.get("purpose")


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID is running (this process counts as running).

    A PID that cannot name a process (0, negative, out of range) is not running. Used by the lock's
    fallback where ``fcntl`` is missing and by ``common.io`` to tell a dead writer's temporary files.
    """
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False  # os.kill would address a process group (0, -1, -N), not a process
    if os.name == "nt":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except (OSError, OverflowError):  # beyond the PIDs the system has
        return False
    return True


def _windows_pid_alive(pid: int) -> bool:
    # os.kill(pid, 0) would terminate the process on Windows; ask for its exit code instead.
    import ctypes

    if pid > 0xFFFFFFFF:  # not a DWORD: no such process
        return False
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    process_query_limited_information, still_active, error_access_denied = 0x1000, 259, 5
    handle = kernel32.OpenProcess(process_query_limited_information, False, pid)
    if not handle:
        return ctypes.get_last_error() == error_access_denied
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)
