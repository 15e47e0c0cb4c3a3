"""``manifest.json``: what a prepared split folder holds, so that a changed or truncated file is found.

    python data_gen/manifest.py verify FOLDER   # exit 0: matches, 1: mismatch (one line each), 2: bad input
    python data_gen/manifest.py write FOLDER    # record a folder prepared before manifests existed

A split folder (``<data_root>/<dataset folder>/<benchmark>/``) holds ``{train,val}_data_joint.npy``,
``{part}_label.pkl`` and ``{part}_num_frame.npy``. Its manifest records, for each of those files: the
size in bytes, the sha256 and, for ``.npy`` files, the shape and dtype from the header; per part the
number of samples and the count of each class; the tool that wrote the folder, the arguments that
determine its contents and the project version. Nothing in it depends on the time or the place of the
run, so two runs that write the same files write the same manifest.

Every converter writes the manifest of each split folder it writes, listing the files it wrote, together
with them (``data_gen.writer.RunOutputs``: hashed from the temporary files, renamed into place with
them). ``write`` lists every regular file of the folder (hidden files, temporary ``*.partial`` files and
the manifest itself excepted). This module sits in layer 1 (NumPy, ``common`` and
``common.split_folder``, whose ``.npy`` header and label readers it uses): the datasets of ``feeders``
use it too.

Two checks, of different cost:

- ``verify(folder)`` reads every byte (sha256) and also reports files missing from or absent in the
  manifest: the thorough check, for the command line and after a copy;
- ``quick_check(folder)`` (what ``warn_if_mismatch`` runs when a dataset is opened) compares sizes and
  the ``.npy`` headers only: a few ``stat`` calls and header reads, whatever the dataset size. It does
  not compare modification times (a copy or an rsync changes them without changing a byte), so an
  in-place edit that keeps the size is found by ``verify`` only.

Label pickles are read with an unpickler that only builds lists, tuples, strings, numbers and NumPy
scalars/arrays: a data file never runs code here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common import split_folder
from common.constants import PARTIAL_MARK, PARTS
from common.io import UsageError, atomic_write_bytes
from common.split_folder import read_npy_header

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "skeleton-contrast split manifest"
MANIFEST_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
_HASH_CHUNK = 1 << 20


class ManifestError(UsageError):
    """A manifest or a split file that cannot be read; the message is one line naming the file."""


def load_labels(path: str | os.PathLike) -> tuple[list[str], list[int]]:
    """(sample names, integer labels) of a ``{part}_label.pkl``, without running code from it
    (``common.split_folder.load_labels``). Raises ManifestError naming the file and what was expected.
    """
    try:
        names, labels = split_folder.load_labels(Path(path))
    except OSError as error:
        raise ManifestError(f"{path}: cannot be read ({error.strerror or error})") from None
    except ValueError as error:  # refused, empty, damaged or malformed: the message names the file
        raise ManifestError(str(error)) from None
    return names, labels.tolist()


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    """The output of ``git -C <checkout> ARGS``, or None outside a git checkout (or without git)."""
    if not (REPO_ROOT / ".git").exists():
        return None
    try:
        result = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """The code a result comes from: the git commit and whether tracked files had changes (None for
    both outside a git checkout)."""
    commit = _git("rev-parse", "HEAD")
    changes = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if changes is None else bool(changes)}


def project_version() -> str:
    """``<commit>`` or ``<commit>-dirty`` of this checkout, or 'unknown' outside a git checkout."""
    version = code_version()
    if version["commit"] is None:
        return "unknown"
    return version["commit"][:12] + ("-dirty" if version["dirty"] else "")


def is_listed_name(name: str) -> bool:
    """Whether a manifest covers a file of this name: not hidden, not temporary, not the manifest itself."""
    return (
        not name.startswith(".")
        and name != MANIFEST_NAME
        and not name.endswith(PARTIAL_MARK)
        and f"{PARTIAL_MARK}-" not in name
    )


def listed_files(folder: Path) -> list[Path]:
    """The files a manifest of ``folder`` covers (regular files with a listed name), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_listed_name(p.name))


def file_entry(path: Path, name: str | None = None, sha256: str | None = None) -> dict[str, Any]:
    """size, sha256 and (for .npy) shape and dtype of one file.

    ``name``: the name the file has in the folder, when ``path`` is a temporary file that will take it.
    ``sha256``: the file's hash when its writer computed it already (read from the file otherwise).
    """
    entry: dict[str, Any] = {"size": path.stat().st_size, "sha256": sha256 or sha256_of(path)}
    if (path.name if name is None else name).endswith(".npy"):
        try:
            shape, dtype, _, _ = read_npy_header(path)
        except ValueError as error:
            raise ManifestError(str(error)) from None
        entry.update(shape=list(shape), dtype=dtype.str if dtype.byteorder not in "=|" else dtype.name)
    return entry


def part_summaries(files: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """Per part with a label file in ``files`` (name -> path): its number of samples and the count of each class."""
    parts = {}
    for part in PARTS:
        label_path = files.get(f"{part}_label.pkl")
        if label_path is not None:
            _, labels = load_labels(label_path)
            counts = Counter(labels)
            parts[part] = {"samples": len(labels), "class_counts": {str(k): counts[k] for k in sorted(counts)}}
    return parts


def build_manifest(
    files: Mapping[str, Path],
    *,
    tool: str,
    arguments: Mapping[str, Any],
    sha256: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The manifest of a folder that holds ``files`` (name in the folder -> the file to read now).

    The paths may be temporary files still to be renamed to their names: what a converter records
    before its commit. ``sha256``: hashes its writer already computed, by name (the rest are read).
    Raises ManifestError when a file cannot be read.
    """
    sha256 = sha256 or {}
    for name in files:
        if not is_listed_name(name):
            raise ValueError(f"{name!r} is not a name a manifest lists")
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "tool": tool,
        "arguments": {str(k): _jsonable(v) for k, v in arguments.items()},
        "project_version": project_version(),
        "files": {name: file_entry(Path(files[name]), name, sha256.get(name)) for name in sorted(files)},
        "parts": part_summaries({name: Path(path) for name, path in files.items()}),
    }


def manifest_text(manifest: Mapping[str, Any]) -> str:
    """The JSON text of a manifest, as written to ``manifest.json``."""
    return json.dumps(manifest, indent=2) + "\n"


def write_manifest(folder: str | os.PathLike, *, tool: str, arguments: Mapping[str, Any]) -> Path:
    """Hash every listed file of ``folder`` and write its ``manifest.json`` atomically; returns its path.

    ManifestError when a file cannot be read, ``common.io.OutputError`` when the folder cannot be written.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a folder")
    manifest = build_manifest({p.name: p for p in listed_files(folder)}, tool=tool, arguments=arguments)
    return atomic_write_bytes(folder / MANIFEST_NAME, manifest_text(manifest).encode("utf-8"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of ``folder``, checked for its format; ManifestError (one line) otherwise."""
    path = Path(folder) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: no manifest (write one with: python data_gen/manifest.py write {folder})"
        ) from None
    except (OSError, UnicodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: 'format' is not {MANIFEST_FORMAT!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("size"), int) for e in files.values()
    ):
        raise ManifestError(f"{path}: 'files' must map file names to entries with an integer 'size'")
    return manifest


def _cheap_mismatches(folder: Path, name: str, entry: dict[str, Any]) -> list[str]:
    """Missing file, size, and (for .npy) header shape/dtype against the manifest entry."""
    path = folder / name
    if not path.is_file():
        return [f"{path}: missing (listed in {MANIFEST_NAME})"]
    size = path.stat().st_size
    if size != entry["size"]:
        return [f"{path}: {size} bytes, {MANIFEST_NAME} says {entry['size']}"]
    if "shape" in entry:
        try:
            shape, dtype, _, _ = read_npy_header(path)
        except ValueError as error:
            return [str(error)]
        recorded = (tuple(entry["shape"]), np.dtype(entry.get("dtype", dtype)))
        if (shape, dtype) != recorded:
            return [f"{path}: shape {shape} dtype {dtype}, {MANIFEST_NAME} says {recorded[0]} {recorded[1]}"]
    return []


def quick_check(folder: str | os.PathLike, manifest: dict[str, Any] | None = None) -> list[str]:
    """Sizes and .npy headers of the listed files against the manifest: one line per mismatch; no hashing."""
    folder = Path(folder)
    manifest = read_manifest(folder) if manifest is None else manifest
    return [line for name, entry in manifest["files"].items() for line in _cheap_mismatches(folder, name, entry)]


def verify(folder: str | os.PathLike) -> list[str]:
    """Every listed file against the manifest, sha256 included, and files the manifest does not list.

    One line per mismatch; an empty list means the folder holds exactly what was recorded. Raises
    ManifestError when the folder or its manifest cannot be read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a folder")
    manifest = read_manifest(folder)
    lines = []
    for name, entry in manifest["files"].items():
        cheap = _cheap_mismatches(folder, name, entry)
        if cheap:
            lines.extend(cheap)
            continue
        digest = sha256_of(folder / name)
        if digest != entry.get("sha256", digest):
            lines.append(
                f"{folder / name}: sha256 {digest[:12]}..., {MANIFEST_NAME} says "
                f"{str(entry['sha256'])[:12]}... (same size: changed in place)"
            )
    lines.extend(f"{p}: not listed in {MANIFEST_NAME}" for p in listed_files(folder) if p.name not in manifest["files"])
    return lines


_WARNED: set[str] = set()


def warn_if_mismatch(folder: str | os.PathLike) -> list[str]:
    """For the datasets: the cheap check of ``folder`` once per folder per process, as one warning.

    Silent when the folder has no manifest (prepared before manifests existed). Returns the mismatch
    lines found (empty when it matches, has no manifest, or was checked before in this process).
    """
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _WARNED:
        return []
    _WARNED.add(key)
    if not (folder / MANIFEST_NAME).is_file():
        return []
    try:
        lines = quick_check(folder)
    except ManifestError as error:
        lines = [str(error)]
    if lines:
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        warnings.warn(
            f"{folder} does not match its {MANIFEST_NAME}: {lines[0]}{more}; "
            f"check with: python data_gen/manifest.py verify {folder}",
            stacklevel=2,
        )
    return lines
