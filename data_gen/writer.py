"""The output side of every data_gen converter: nothing half-written, nothing good replaced.

One :class:`RunOutputs` per run, used as a context manager::

    with RunOutputs(out_folder, tool="data_gen/x.py", arguments={...}) as out:  # creates and locks the folder
        out.add_part(("xsub", "train"), "xsub", "train", capacity=n)
        for name, label, data, num_frame in samples:
            out.append([("xsub", "train")], name, label, data, num_frame)
        out.stage_skipped(skipped)                 # skipped_samples.txt, or its removal
        counts = out.commit()                      # checked, flushed, fsynced, renamed into place

- Every file is first written under a name of this run only, ``NAME.partial-<pid>-<random>``, next to
  its final name; :meth:`RunOutputs.commit` renames them all into place once every one is complete. Until
  then the previous outputs stay as they were.
- Leaving the ``with`` block without a commit (an error, an exception, Ctrl-C) removes this run's
  temporary files and nothing else.
- The output folder is locked (``common.locking.FolderLock``) for the whole run: a second run into it
  stops with a one-line :class:`DataGenError` naming the process that holds it; the lock of a run that
  was killed is taken over (a warning names its PID) and that run's temporary files are removed.
- Commit refuses a part without any sample, before anything is replaced.
- With ``tool`` given, commit writes each part folder's ``manifest.json`` (``common.manifest``: the
  files' sizes, sha256 and headers, the class counts, ``tool`` and ``arguments``), hashed from the
  temporary files once they are complete and renamed into place together with them; without ``tool``
  an earlier manifest of a part folder is removed (it would describe other files).
- Every filesystem error (folder is a file, not writable, disk full) becomes a one-line
  :class:`DataGenError` naming the path.

Arrays are appended row by row with plain sequential writes (no memory map): memory stays at one row
whatever the dataset size, and a full disk is an ``OSError`` at the write, not a SIGBUS in a mapping.
The ``.npy`` header is written for the capacity and rewritten for the rows actually written (NumPy pads
headers so the length does not depend on the first dimension), then the file is cut to size.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import secrets
import warnings
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from common.constants import PARTIAL_MARK, SAMPLE_SHAPE
from common.io import fsync_folder
from common.locking import FolderLock, LockHeld
from common.manifest import MANIFEST_NAME, ManifestError, build_manifest, manifest_text
from common.split_folder import part_paths

TEMP_MARK = f"{PARTIAL_MARK}-"
SKIPPED_LIST = "skipped_samples.txt"


class DataGenError(Exception):
    """A problem with the inputs or outputs that stops a run; its message is one line for the user."""


@dataclass
class PreparedSample:
    """One sample read and normalised by a converter, ready to be appended."""

    data: np.ndarray  # (3, 300, 25, 2) float32, SAMPLE_SHAPE
    num_frame: int  # frames kept (the source's count, at most 300)
    file_frames: int  # the source's frame count
    has_body: bool


def check_path_component(name: str, where: str) -> str:
    """``name`` if it can be one folder or file name inside the output folder, else DataGenError.

    Names read from data files (split names, ...) become paths only through this check: no separator,
    no ``..``, not empty.
    """
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise DataGenError(
            f"{where}: {name!r} cannot be a folder name (it must be non-empty, without '/', '\\' or '..')"
        )
    return name


def _write_bytes(file: io.BufferedWriter, data: bytes | memoryview) -> None:
    """Every byte of every output goes through here (a single place for disk-full handling and tests)."""
    file.write(data)


def os_error(path: Path, error: OSError, flag: str = "--out-folder") -> DataGenError:
    """A one-line DataGenError for a filesystem error on an output path (``flag``: the option naming it)."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return DataGenError(
            f"{path}: no space left on device ({reason}); free some space or choose another "
            f"{flag} (the previous outputs are unchanged)"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DataGenError(f"{path}: not writable ({reason}); choose another {flag}")
    if isinstance(error, NotADirectoryError):
        return DataGenError(f"{path}: part of this path is a file, not a folder; choose another {flag}")
    return DataGenError(f"{path}: cannot write ({reason})")


@contextmanager
def _writing(path: Path, flag: str = "--out-folder") -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise os_error(path, error, flag) from None


def make_folder(folder: Path, flag: str = "--out-folder") -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, deepest last.

    DataGenError (one line) when it is a file or cannot be created.
    """
    if folder.is_dir():
        return []
    if folder.exists():
        raise DataGenError(f"{folder}: exists and is not a folder; choose another {flag}")
    missing = [folder, *(p for p in folder.parents if not p.exists())]
    with _writing(folder, flag):
        folder.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def _npy_header(shape: tuple[int, ...], dtype: np.dtype, length: int | None = None) -> bytes:
    """The ``.npy`` (version 1.0) header of an array, padded with spaces to ``length`` bytes if given."""
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(
        buffer, {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    header = buffer.getvalue()
    if length is None or len(header) == length:
        return header
    if len(header) > length:  # cannot happen: NumPy reserves room for any first dimension
        raise ValueError(f"npy header for shape {shape} does not fit in {length} bytes")
    text = header[10:-1] + b" " * (length - len(header)) + b"\n"
    return header[:8] + len(text).to_bytes(2, "little") + text


class NpyAppender:
    """One ``.npy`` file written row by row: created for ``capacity`` rows, cut to the rows written."""

    def __init__(self, path: Path, row_shape: Sequence[int], dtype: np.dtype | type, capacity: int) -> None:
        self.path = path
        self.row_shape = tuple(int(d) for d in row_shape)
        self.dtype = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
        self.capacity = int(capacity)
        self.count = 0
        self._row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._file: io.BufferedWriter | None = open(path, "xb")  # noqa: SIM115 (closed in finish/close)
        self._header = _npy_header((self.capacity, *self.row_shape), self.dtype)
        # Hashed as written, so the manifest need not read the file back (valid while the header stays).
        self._digest = hashlib.sha256(self._header)
        self.sha256: str | None = None
        try:
            _write_bytes(self._file, self._header)
        except BaseException:
            self.close()
            raise

    def append(self, row: np.ndarray) -> None:
        if self.count >= self.capacity:
            raise ValueError(f"{self.path}: more than the {self.capacity} rows it was created for")
        row = np.ascontiguousarray(row, dtype=self.dtype)
        if row.shape != self.row_shape:
            raise ValueError(f"{self.path}: row of shape {row.shape}, expected {self.row_shape}")
        data = memoryview(row).cast("B")
        _write_bytes(self._file, data)
        self._digest.update(data)
        self.count += 1

    def finish(self) -> None:
        """Rewrite the header for the rows written, cut the file to size, flush and fsync, close.

        ``sha256`` is then the file's hash when every row it was created for was written (the usual
        case: the header is unchanged), else None."""
        f = self._file
        if f is None:
            raise ValueError(f"{self.path}: already finished or closed")
        f.flush()
        f.seek(0)
        _write_bytes(f, _npy_header((self.count, *self.row_shape), self.dtype, len(self._header)))
        f.flush()
        f.truncate(len(self._header) + self.count * self._row_bytes)
        os.fsync(f.fileno())
        self.close()
        self.sha256 = self._digest.hexdigest() if self.count == self.capacity else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class PartWriter:
    """One (benchmark, part) of the training layout: ``{part}_data_joint.npy`` rows, labels, frame counts."""

    def __init__(
        self, outputs: RunOutputs, folder: Path, part: str, capacity: int, row_shape: Sequence[int] = SAMPLE_SHAPE
    ) -> None:
        self.folder = folder
        self.part = part
        self._outputs = outputs
        self._paths = part_paths(folder, part)
        self._data = outputs.npy(self._paths.data, row_shape, np.float32, capacity)
        self.names: list[str] = []
        self.labels: list[int] = []
        self.num_frames: list[int] = []

    @property
    def written(self) -> int:
        return len(self.names)

    def append(self, name: str, label: int, data: np.ndarray, num_frame: int) -> None:
        with _writing(self._data.path):
            self._data.append(data)
        self.names.append(name)
        self.labels.append(int(label))
        self.num_frames.append(int(num_frame))

    def finish(self) -> None:
        """Stage the label pickle and the frame counts (the data file is completed by the commit)."""
        frames = io.BytesIO()
        npy_format.write_array(frames, np.asarray(self.num_frames, dtype=np.int64))
        self._outputs.stage_bytes(self._paths.num_frame, frames.getvalue())
        self._outputs.stage_bytes(self._paths.label, pickle.dumps((list(self.names), list(self.labels))))


class RunOutputs:
    """Everything one run writes under ``out_folder``; see the module docstring."""

    def __init__(
        self,
        out_folder: str | os.PathLike,
        purpose: str = "data_gen",
        *,
        tool: str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.out_folder = Path(out_folder)
        self.purpose = purpose
        # What the part folders' manifests record (none without a tool); see the module docstring.
        self.tool = tool
        self.arguments = dict(arguments or {})
        self.parts: dict[Hashable, PartWriter] = {}
        self._token = f"{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
        self._temps: list[Path] = []  # this run's temporary files, for the clean-up
        self._appenders: list[NpyAppender] = []
        self._renames: list[tuple[Path, Path]] = []  # (temporary, final)
        self._removals: list[Path] = []
        self._lock: FolderLock | None = None
        self._created_folders: list[Path] = []  # by this run, removed again (if empty) without a commit
        self._committed = False

    # -- the run ------------------------------------------------------------------------------------

    def __enter__(self) -> RunOutputs:
        self._make_folder(self.out_folder)
        lock = FolderLock(self.out_folder, self.purpose)
        try:
            with _writing(self.out_folder):
                lock.__enter__()
        except LockHeld as held:
            self._remove_created_folder()
            raise DataGenError(str(held)) from None
        except DataGenError:
            self._remove_created_folder()
            raise
        self._lock = lock
        if lock.stale_holder is not None:
            removed = self._remove_dead_run_files(lock.stale_holder)
            warnings.warn(
                f"{self.out_folder}: taking over the lock left by PID {lock.stale_holder}, a run that "
                f"did not finish; removed its {removed} temporary file(s)",
                stacklevel=2,
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if not self._committed:
                self._discard()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            if not self._committed:
                self._remove_created_folder()

    # -- building the outputs -----------------------------------------------------------------------

    def temp_path(self, final: Path) -> Path:
        """This run's temporary name for ``final``."""
        return final.with_name(final.name + self._token)

    def folder(self, *names: str) -> Path:
        """``out_folder/names...``, created; each name must be a plain folder name."""
        folder = self.out_folder
        for name in names:
            folder = folder / check_path_component(name, str(folder))
        self._make_folder(folder)
        return folder

    def npy(self, final: Path, row_shape: Sequence[int], dtype: np.dtype | type, capacity: int) -> NpyAppender:
        """A new ``.npy`` appended row by row, renamed to ``final`` at commit."""
        temp = self.temp_path(final)
        with _writing(temp):
            self._temps.append(temp)
            appender = NpyAppender(temp, row_shape, dtype, capacity)
        self._appenders.append(appender)
        self._renames.append((temp, final))
        return appender

    def stage_bytes(self, final: Path, content: bytes) -> None:
        """Write ``content`` under a temporary name now (fsynced), renamed to ``final`` at commit."""
        temp = self.temp_path(final)
        with _writing(temp):
            self._temps.append(temp)
            with open(temp, "xb") as f:
                _write_bytes(f, content)
                f.flush()
                os.fsync(f.fileno())
        self._renames.append((temp, final))

    def stage_text(self, relative: str, text: str) -> None:
        self.stage_bytes(self.out_folder / relative, text.encode("utf-8"))

    def stage_removal(self, relative: str) -> None:
        """Remove ``out_folder/relative`` at commit (a file that would describe an earlier run)."""
        self._removals.append(self.out_folder / relative)

    def stage_skipped(self, skipped: Iterable[tuple[str, str]]) -> None:
        """``skipped_samples.txt`` (name TAB reason per line) for this run; removed when nothing was skipped."""
        lines = [f"{name}\t{reason}\n" for name, reason in skipped]
        if lines:
            self.stage_text(SKIPPED_LIST, "".join(lines))
        else:
            self.stage_removal(SKIPPED_LIST)

    def add_part(
        self, key: Hashable, folder_name: str, part: str, capacity: int, row_shape: Sequence[int] = SAMPLE_SHAPE
    ) -> PartWriter:
        """A (benchmark, part) output in ``out_folder/folder_name`` for at most ``capacity`` samples."""
        folder = self.folder(folder_name)
        if capacity < 1:
            raise DataGenError(f"{folder}: no sample for {part}; the existing files there are left as they were")
        self.parts[key] = PartWriter(self, folder, part, capacity, row_shape)
        return self.parts[key]

    def append(self, keys: Iterable[Hashable], name: str, label: int, data: np.ndarray, num_frame: int) -> None:
        """One sample into every part in ``keys``."""
        for key in keys:
            self.parts[key].append(name, label, data, num_frame)

    def empty_parts(self) -> list[Hashable]:
        return [key for key, part in self.parts.items() if part.written == 0]

    def counts(self) -> dict[str, dict[str, int]]:
        """folder name -> part -> samples written."""
        counts: dict[str, dict[str, int]] = {}
        for writer in self.parts.values():
            counts.setdefault(writer.folder.name, {})[writer.part] = writer.written
        return counts

    # -- commit and clean-up ------------------------------------------------------------------------

    def commit(self) -> dict[str, dict[str, int]]:
        """Refuse empty parts, complete every file, then rename all into place; returns :meth:`counts`."""
        for key in self.empty_parts():
            writer = self.parts[key]
            raise DataGenError(
                f"{writer.folder}: no sample was written for {writer.part}; the existing files "
                "there are left as they were"
            )
        for appender in self._appenders:
            with _writing(appender.path):
                appender.finish()
        for writer in self.parts.values():
            writer.finish()
        self._stage_manifests()
        for temp, final in self._renames:
            with _writing(final):
                os.replace(temp, final)
        for path in self._removals:
            with _writing(path):
                path.unlink(missing_ok=True)
        self._committed = True
        for folder in {final.parent for _, final in self._renames} | {self.out_folder}:
            fsync_folder(folder)
        return self.counts()

    def _stage_manifests(self) -> None:
        """Stage ``manifest.json`` in every part folder: the files this run renames there, read from
        their complete temporary files (a file that stays from an earlier run is not this run's).

        Without a ``tool``, an earlier manifest there is removed instead: it would describe other files.
        """
        for folder in dict.fromkeys(writer.folder for writer in self.parts.values()):
            path = folder / MANIFEST_NAME
            if self.tool is None:
                self._removals.append(path)
                continue
            files = {final.name: temp for temp, final in self._renames if final.parent == folder}
            hashed = {a.path: a.sha256 for a in self._appenders if a.sha256 is not None}
            known = {name: hashed[temp] for name, temp in files.items() if temp in hashed}
            try:
                with _writing(path):
                    manifest = build_manifest(files, tool=self.tool, arguments=self.arguments, sha256=known)
            except ManifestError as error:
                raise DataGenError(f"{path}: cannot describe the files of this run ({error})") from None
            self.stage_bytes(path, manifest_text(manifest).encode("utf-8"))

    def _discard(self) -> None:
        for appender in self._appenders:
            appender.close()
        for temp in self._temps:
            # Keep cleaning; the error that stopped the run is the one to report.
            with suppress(OSError):
                temp.unlink(missing_ok=True)

    def _remove_dead_run_files(self, pid: int) -> int:
        pattern = f"*{TEMP_MARK}{pid}-*"
        leftovers = [*self.out_folder.glob(pattern), *self.out_folder.glob(f"*/{pattern}")]
        for path in leftovers:
            with _writing(path):
                path.unlink(missing_ok=True)
        return len(leftovers)

    def _make_folder(self, folder: Path) -> None:
        self._created_folders.extend(make_folder(folder))

    def _remove_created_folder(self) -> None:
        for folder in reversed(self._created_folders):
            with suppress(OSError):
                folder.rmdir()  # only if empty
        self._created_folders.clear()
