"""The one place outputs are written: atomically, with the mode the umask gives, one line when it fails.

Every writer goes through :func:`atomic_write`: the bytes go to ``.NAME.tmp-<pid>-<random>`` beside the
target, which is flushed, fsync'ed and renamed over the target (the folder is fsync'ed too). Any failure
removes the temporary and leaves the previous file as it was; a full disk or an unwritable folder is
:class:`OutputError`, one line naming the path. Only a run killed outright leaves a temporary behind:
the next run that locks the folder removes those whose writer is dead (:func:`clean_stale_temporaries`).
This is also the one temporary-name scheme of the project: the converters stage whole folders under it.

Standard library and NumPy only (torch is imported when a checkpoint is saved), so the data tools that
write through it do not load torch. :class:`UsageError` is the error every command turns into
``prog: error: MESSAGE`` and exit status 2 (:mod:`common.cli`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np


class UsageError(ValueError):
    """Input or environment the user must fix (a flag, a file, a folder): one line, exit status 2."""


class OutputError(UsageError):
    """An output could not be written (disk full, folder not writable, a file in the way)."""


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$")


def temp_name(name: str) -> str:
    """The temporary name for writing ``name``: ``.NAME.tmp-<pid>-<random>``."""
    return f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` may still be running (where that cannot be told, as on Windows: yes)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False  # os.kill would address a process group, not a process
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except (OSError, OverflowError):  # beyond the PIDs the system has
        return False
    return True


def storage_error(exc: BaseException) -> OSError | None:
    """The full-disk or permission OSError behind ``exc`` (torch wraps it in a RuntimeError), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL | _NOT_WRITABLE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe_storage_error(path: str | os.PathLike, exc: OSError) -> str:
    """``cannot write PATH: REASON; the previous file, if any, is unchanged``."""
    if exc.errno in _DISK_FULL:
        reason = "no space left on device (or the disk quota is reached)"
    elif exc.errno == errno.EROFS:
        reason = "the file system is read-only"
    else:
        reason = "permission denied"
    return f"cannot write {path}: {reason}; the previous file, if any, is unchanged"


def fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable, where the platform lets a folder be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` (and parents) or raise :class:`OutputError` saying why it cannot be one."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{what} {folder} cannot be created: a part of its path is a file") from None
    except OSError as exc:
        if exc.errno in _DISK_FULL | _NOT_WRITABLE:
            raise OutputError(describe_storage_error(folder, exc)) from None
        raise
    return folder


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists: where it would be created."""
    while not path.exists():
        path = path.parent
    return path


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """Before a run: ``path`` can become a file (not a folder, its parent not a file). Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; give a file name")
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise OutputError(f"{flag} {path} cannot be created: {parent} is a file")
    return path


def check_output_folder(folder: str | os.PathLike, flag: str) -> None:
    """Before a run: ``folder`` is a writable folder or can be created as one. Creates nothing."""
    folder = Path(folder)
    existing = _nearest_existing(folder)
    if existing == folder and not folder.is_dir():
        raise OutputError(f"{flag} {folder} is a file, not a folder")
    if not existing.is_dir():
        raise OutputError(f"{flag} {folder} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder else f" ({existing} is not writable)"
        raise OutputError(f"{flag} {folder} is not writable{where}")


def _open_temp(folder: Path, name: str) -> tuple[IO[bytes], Path]:
    """A new temporary file for ``name`` in ``folder``, mode 0666 less the umask."""
    tmp = folder / temp_name(name)
    return open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb"), tmp


def atomic_write(path: str | os.PathLike, write_fn: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write_fn(f)`` on a temporary file beside ``path``, then make it ``path``; returns ``path``.

    On any exception (KeyboardInterrupt included) the temporary is removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    folder = ensure_folder(path.parent)
    tmp: Path | None = None
    try:
        f, tmp = _open_temp(folder, path.name)
        with f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_folder(folder)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        storage = storage_error(exc) if isinstance(exc, Exception) else None
        if storage is not None:
            raise OutputError(describe_storage_error(path, storage)) from None
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a half-written checkpoint under ``path``."""
    import torch  # here: the data tools use this module without torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented, key-sorted JSON (NumPy values, paths, devices and tuples allowed)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make ``path`` a copy of the finished file ``source``: a hard link where possible, else a copy."""
    source, path = Path(source), Path(path)
    tmp = ensure_folder(path.parent) / temp_name(path.name)
    try:
        os.link(source, tmp)
    except OSError:  # no hard links here: copy the bytes

        def copy(f: IO[bytes]) -> None:
            with open(source, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        return atomic_write(path, copy)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Temporary files and folders in ``folder`` whose writer is no longer running."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        entry
        for entry in folder.iterdir()
        if (match := TEMP_RE.match(entry.name)) is not None and not pid_alive(int(match["pid"]))
    )


def remove_files(paths: Iterable[Path]) -> list[Path]:
    """Delete ``paths`` (files or folders); returns those removed (one already gone is skipped)."""
    removed = []
    for path in paths:
        try:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove what killed writers left in ``folder``; returns the paths removed."""
    return remove_files(stale_temporaries(folder))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.ndarray)):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    torch = sys.modules.get("torch")  # a torch.device can only exist once torch is loaded
    if torch is not None and isinstance(value, torch.device):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
