"""The one place outputs are written: atomically, with the permissions the umask gives, and with a
one-line error when the disk is full or the folder cannot be written.

Every writer goes through :func:`atomic_write`: the bytes go to a temporary file beside the target,
named ``.NAME.tmp-<pid>-<random>``, which is flushed and fsync'ed and then renamed over the target; the
folder is fsync'ed too so the rename survives a power cut. A failure at any point (an exception from the
writer, a full disk, a signal) removes the temporary file and leaves the previous file, if any, as it
was. A run killed outright (SIGKILL, power loss) can leave a temporary file behind;
:func:`clean_stale_temporaries` removes those of processes no longer alive.

This module sits at the bottom of the package (standard library, NumPy and ``common.locking``; torch
only when a checkpoint is saved, so the data tools that write through it do not load torch), so it also
defines :class:`UsageError`, the error every script turns into ``prog: error: MESSAGE`` and exit 2.
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

from common.locking import pid_alive


class UsageError(ValueError):
    """Input or environment the user must fix (a flag, a file, a folder): scripts print the message as
    one line, ``prog: error: MESSAGE``, and exit with status 2. Subclasses ``ValueError`` so callers that
    already report ``ValueError`` as bad input keep doing so."""


class OutputError(UsageError):
    """An output could not be written (disk full, folder not writable, a file where a folder should
    be). The message names the path; nothing half-written is left under the final name."""


# Errors of the storage rather than of the program: reported as one line naming the path.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}

# ``.NAME.tmp-<pid>-<8 hex digits>``: the pid says whether the writer may still be alive.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$")
# What earlier versions of these scripts left: ``tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")`` and
# the hard-link temporary ``.checkpoint_last.pth.tar.<pid>.link``.
_LEGACY_TEMP_RE = re.compile(r"^\..+\.(?:[a-z0-9_]{8}\.tmp|\d+\.link)$")


def temp_name(name: str) -> str:
    """The temporary name for writing ``name``: ``.NAME.tmp-<pid>-<random>``."""
    return f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux's /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it; put it straight back
    os.umask(mask)
    return mask


def _storage_error(exc: BaseException) -> OSError | None:
    """The full-disk or permission OSError behind ``exc`` (torch wraps the writer's error in a
    RuntimeError whose context is the OSError), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL | _NOT_WRITABLE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe_storage_error(path: str | os.PathLike, exc: OSError) -> str:
    """``cannot write PATH: no space left on device ...``: one line for a full disk or an unwritable
    folder."""
    if exc.errno in _DISK_FULL:
        reason = "no space left on device (or the disk quota is reached)"
    elif exc.errno == errno.EROFS:
        reason = "the file system is read-only"
    else:
        reason = "permission denied"
    return f"cannot write {path}: {reason}; the previous file, if any, is unchanged"


def fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable. Not every platform lets a folder be opened (Windows);
    there a rename is as durable as the file system makes it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_temp(folder: Path, name: str) -> tuple[IO[bytes], Path]:
    """A new temporary file in ``folder`` for ``name``, opened for binary writing, mode 0666 & ~umask."""
    tmp = folder / temp_name(name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        # Created private first so nobody reads it half-written under a wide umask race; then the mode
        # a plain open() would have given.
        os.fchmod(fd, 0o666 & ~current_umask())
        return os.fdopen(fd, "wb"), tmp
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


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


def atomic_write(path: str | os.PathLike, write_fn: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write_fn(f)`` with a binary file open on a temporary file beside ``path``, then make it
    ``path`` (fsync file, rename, fsync folder). Returns ``path``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and the previous
    ``path`` is untouched. A full disk or an unwritable folder raises :class:`OutputError` naming
    ``path``; other errors propagate as they are.
    """
    path = Path(path)
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
        storage = _storage_error(exc) if isinstance(exc, Exception) else None
        if storage is not None:
            raise OutputError(describe_storage_error(path, storage)) from None
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """``data`` as the whole new content of ``path``, atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a half-written checkpoint under ``path``."""
    import torch  # here, not at the top: the data tools use this module without torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented, key-sorted JSON (NumPy scalars, paths, devices, tuples and sets allowed),
    atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez`` (loads without pickle for numeric arrays), atomically."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike, *, link: bool = True) -> Path:
    """Make ``path`` a copy of the finished file ``source``, atomically: a hard link where the file
    system has them (no second write of the bytes), else a byte copy."""
    source, path = Path(source), Path(path)
    folder = ensure_folder(path.parent)
    if link:
        tmp = folder / temp_name(path.name)
        try:
            os.link(source, tmp)
        except OSError:
            pass  # no hard links here (or across file systems): copy instead
        else:
            try:
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_folder(folder)
            return path

    def copy(f: IO[bytes]) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f, length=1 << 20)

    return atomic_write(path, copy)


def stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Temporary files in ``folder`` left by writers that are no longer running: ours whose pid is
    dead, and those of earlier versions (which recorded no pid)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = []
    for entry in folder.iterdir():
        match = _TEMP_RE.match(entry.name)
        if match is not None:
            if not pid_alive(int(match["pid"])) and entry.is_file():
                stale.append(entry)
        elif _LEGACY_TEMP_RE.match(entry.name) and entry.is_file():
            stale.append(entry)
    return sorted(stale)


def remove_files(paths: Iterable[Path]) -> list[Path]:
    """Delete ``paths``; returns those removed (one already gone is skipped, not an error)."""
    removed = []
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed run left in ``folder`` (see :func:`stale_temporaries`);
    returns the paths removed. Call it while holding the folder's lock."""
    return remove_files(stale_temporaries(folder))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    torch = sys.modules.get("torch")  # a torch.device can only exist once torch is loaded
    if torch is not None and isinstance(value, torch.device):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
