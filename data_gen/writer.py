"""The output side of the data_gen converters: nothing half-written, nothing mixed, nothing left behind.

``with RunOutputs(out, purpose, tool=..., arguments=...) as run:`` creates and locks ``out`` (a second run
into it stops with one line naming the holder) and removes what killed runs left there. Each split folder
``out/NAME`` is staged whole as ``out/.NAME.tmp-<pid>-<random>/`` (``common.io.temp_name``): ``run.part``
appends rows to its ``.npy`` with plain writes (memory stays at one row; a full disk is an error at the
write, not a SIGBUS in a mapping). ``run.commit()`` completes every file and each folder's
``manifest.json``, then moves the files in behind the commit marker of ``common.split_folder`` (written
first, removed last). Leaving the block otherwise removes every temporary, whatever fails meanwhile.
Every error of an output is one line naming its path.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from common import io as cio
from common.constants import SAMPLE_SHAPE
from common.locking import FolderLock
from common.manifest import MANIFEST_NAME, build_manifest, manifest_text
from common.split_folder import COMMIT_MARKER, part_paths

SKIPPED_LIST = "skipped_samples.txt"
_FLOAT32 = np.dtype("<f4")


class DataGenError(cio.UsageError):
    """Bad input, or an output that cannot be written: one line for the user, exit status 2."""


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Every OSError of an output inside the block is one line naming ``path``."""
    try:
        yield
    except OSError as error:
        if cio.storage_error(error) is not None:
            raise cio.OutputError(cio.describe_storage_error(path, error)) from None
        if isinstance(error, (NotADirectoryError, FileExistsError)):
            raise cio.OutputError(f"{path} cannot be created: a part of its path is a file") from None
        raise OSError(error.errno, error.strerror, str(path)) from None


def write_file(path: Path, data: bytes, mode: str = "xb") -> None:
    """``data`` into a new file at ``path``, fsynced."""
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def npy_header(shape: tuple[int, ...], dtype: np.dtype | str = _FLOAT32, length: int | None = None) -> bytes:
    """The ``.npy`` 1.0 header of a C-order array, padded with spaces to ``length`` bytes if given."""
    buffer = io.BytesIO()
    descr = npy_format.dtype_to_descr(np.dtype(dtype))
    npy_format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    header = buffer.getvalue()
    if length is None or len(header) == length:
        return header
    text = header[10:-1] + b" " * (length - len(header)) + b"\n"  # NumPy leaves room for any first dimension
    return header[:8] + len(text).to_bytes(2, "little") + text


class PartWriter:
    """One part of a staged split folder: its data rows on disk, its names, labels and frame counts in memory."""

    def __init__(self, staged: Path, final: Path, part: str, capacity: int, row_shape: Sequence[int]) -> None:
        self.final, self.capacity = final, capacity
        self.row_shape = tuple(row_shape)
        self.paths, self.finals = part_paths(staged, part), part_paths(final, part)  # now / after the commit
        self.names: list[str] = []
        self.labels: list[int] = []
        self.num_frames: list[int] = []
        self.sha256: str | None = None
        self._header = npy_header((capacity, *self.row_shape))
        self._digest = hashlib.sha256(self._header)  # hashed as written: the manifest need not read it back
        with writing(self.finals.data):
            self._file = open(self.paths.data, "xb")  # noqa: SIM115 (closed by finish or close)
        self._file.seek(len(self._header))  # the header is written by finish, for the rows written

    def append(self, name: str, label: int, data: np.ndarray, num_frame: int) -> None:
        row = np.ascontiguousarray(data, dtype=_FLOAT32)
        if row.shape != self.row_shape or len(self.names) >= self.capacity:
            raise ValueError(f"{self.paths.data}: row {len(self.names)} of shape {row.shape} does not fit")
        with writing(self.finals.data):
            self._file.write(memoryview(row).cast("B"))
        self._digest.update(memoryview(row).cast("B"))
        self.names.append(name)
        self.labels.append(int(label))
        self.num_frames.append(int(num_frame))

    def finish(self) -> None:
        """Rewrite the header for the rows written, cut the file to size, fsync; write labels and frame counts."""
        count, f = len(self.names), self._file
        with writing(self.finals.data):
            f.flush()
            f.seek(0)
            f.write(npy_header((count, *self.row_shape), _FLOAT32, len(self._header)))
            f.truncate(len(self._header) + count * _FLOAT32.itemsize * int(np.prod(self.row_shape)))
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self.sha256 = self._digest.hexdigest() if count == self.capacity else None  # else the header changed
        frames = io.BytesIO()
        npy_format.write_array(frames, np.asarray(self.num_frames, dtype=np.int64))
        with writing(self.finals.num_frame):
            write_file(self.paths.num_frame, frames.getvalue())
        with writing(self.finals.label):
            write_file(self.paths.label, pickle.dumps((self.names, self.labels)))

    def close(self) -> None:
        with suppress(OSError):  # a flush that fails (a full disk) still closes the file
            self._file.close()


class RunOutputs:
    """Everything one run writes under ``out_folder``; see the module docstring."""

    def __init__(self, out_folder: str | os.PathLike, purpose: str, *, tool: str, arguments: Mapping[str, Any]) -> None:
        self.out, self.purpose, self.tool, self.arguments = Path(out_folder), purpose, tool, dict(arguments)
        self.parts: dict[tuple[str, str], PartWriter] = {}
        self._staged: dict[str, Path] = {}  # split folder name -> its staged folder
        self._files: dict[str, Path | None] = {}  # file beside the split folders -> its temporary (None: remove)
        self._created: list[Path] = []
        self._lock: FolderLock | None = None
        self._committed = False

    def __enter__(self) -> RunOutputs:
        self._created = [p for p in [*reversed(self.out.parents), self.out] if not p.exists()]
        cio.ensure_folder(self.out)
        try:
            lock = FolderLock(self.out, self.purpose)
            with writing(self.out):
                lock.__enter__()
                self._lock = lock
                removed = cio.clean_stale_temporaries(self.out)
        except BaseException:
            self.__exit__()
            raise
        if removed:
            left = ", ".join(p.name for p in removed)
            warnings.warn(f"{self.out}: removed what an interrupted run left: {left}", stacklevel=2)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._committed:
            for writer in self.parts.values():
                writer.close()
            for temp in [*self._staged.values(), *filter(None, self._files.values())]:
                with suppress(OSError):  # what cannot be removed now, the next run removes (its writer is dead)
                    shutil.rmtree(temp, ignore_errors=True) if temp.is_dir() else temp.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        for folder in [] if self._committed else reversed(self._created):
            with suppress(OSError):
                folder.rmdir()  # only if empty

    def part(self, folder_name: str, part: str, capacity: int, row_shape: Sequence[int] = SAMPLE_SHAPE) -> PartWriter:
        """The writer of ``out/folder_name``'s ``part``, for at most ``capacity`` rows."""
        final = self.out / folder_name
        if final.exists() and not final.is_dir():
            raise DataGenError(f"{final} exists and is not a folder; remove it or choose another --out-folder")
        if folder_name not in self._staged:
            staged = self.out / cio.temp_name(folder_name)
            with writing(final):
                staged.mkdir()
            self._staged[folder_name] = staged
        self.parts[folder_name, part] = PartWriter(self._staged[folder_name], final, part, capacity, row_shape)
        return self.parts[folder_name, part]

    def stage_file(self, name: str, text: str | None) -> None:
        """``out/name`` becomes ``text`` at commit (``None``: it is removed, as describing another run)."""
        self._files[name] = None if text is None else self.out / cio.temp_name(name)
        if text is not None:
            with writing(self.out / name):
                write_file(self._files[name], text.encode("utf-8"))

    def commit(self) -> dict[str, dict[str, int]]:
        """Complete every file and each folder's manifest, then move them into place; folder -> part -> rows."""
        for writer in self.parts.values():
            writer.finish()
        for name, staged in self._staged.items():
            hashes = {w.paths.data.name: w.sha256 for w in self.parts.values() if w.final.name == name and w.sha256}
            files = {p.name: p for p in staged.iterdir()}
            manifest = build_manifest(files, tool=self.tool, arguments=self.arguments, sha256=hashes)
            with writing(self.out / name / MANIFEST_NAME):
                write_file(staged / MANIFEST_NAME, manifest_text(manifest).encode("utf-8"))
            cio.fsync_folder(staged)
        for name, staged in self._staged.items():
            self._move_in(staged, self.out / name)
        for name, temp in self._files.items():
            with writing(self.out / name):
                os.replace(temp, self.out / name) if temp else (self.out / name).unlink(missing_ok=True)
        self._committed = True
        cio.fsync_folder(self.out)
        return {name: {p: len(w.names) for (n, p), w in self.parts.items() if n == name} for name in self._staged}

    def _move_in(self, staged: Path, final: Path) -> None:
        """The files of ``staged`` into ``final``, behind the commit marker (readers refuse a folder holding it)."""
        with writing(final):
            final.mkdir(exist_ok=True)
            write_file(final / COMMIT_MARKER, f"pid={os.getpid()}\ntool={self.tool}\n".encode(), "wb")
            cio.fsync_folder(final)
            for path in sorted(staged.iterdir()):
                os.replace(path, final / path.name)
            cio.fsync_folder(final)
            (final / COMMIT_MARKER).unlink()
            cio.fsync_folder(final)
            staged.rmdir()
