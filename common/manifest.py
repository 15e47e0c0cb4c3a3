"""``manifest.json``: what a prepared split folder holds, so that a changed or truncated file is found.

Per file a converter wrote: size, sha256 and, for ``.npy``, shape and dtype; per part the sample and class
counts; the tool, the arguments that determine the contents and the project version (nothing about the
time or place of the run). :func:`verify` hashes every file and reports files not listed;
:func:`quick_check` (what the datasets run, :func:`warn_if_mismatch`) compares sizes and headers only.
Neither reads a file outside the folder: an entry naming ``../x`` is a mismatch line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.constants import PARTS
from common.io import UsageError, atomic_write_bytes
from common.split_folder import check_committed, load_labels, read_npy_header

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "skeleton-contrast split manifest"
MANIFEST_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(UsageError):
    """A manifest or a split file that cannot be read; the message is one line naming the file."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
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
    """The git commit of this checkout and whether tracked files changed (None for both outside one)."""
    commit = _git("rev-parse", "HEAD")
    changes = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if changes is None else bool(changes)}


def project_version(code: Mapping[str, Any] | None = None) -> str:
    """``<commit>`` (12 digits) or ``<commit>-dirty`` of ``code`` (:func:`code_version`'s form; default this
    checkout's), or 'unknown' outside a git checkout."""
    code = code_version() if code is None else code
    return "unknown" if code["commit"] is None else code["commit"][:12] + ("-dirty" if code["dirty"] else "")


def is_listed_name(name: str) -> bool:
    """Whether a manifest covers a file of this name: a plain name, not hidden, not the manifest itself."""
    return bool(name) and not name.startswith(".") and name != MANIFEST_NAME and not set("/\\\0") & set(name)


def listed_files(folder: Path) -> list[Path]:
    """The files a manifest of ``folder`` covers (regular files with a listed name), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_listed_name(p.name))


def file_entry(path: Path, name: str | None = None, sha256: str | None = None) -> dict[str, Any]:
    """size, sha256 (computed unless given) and, for a ``.npy`` (by ``name``, else ``path``), shape and dtype."""
    entry: dict[str, Any] = {"size": path.stat().st_size, "sha256": sha256 or sha256_of(path)}
    if (name or path.name).endswith(".npy"):
        shape, dtype, _, _ = read_npy_header(path)
        entry.update(shape=list(shape), dtype=dtype.str if dtype.byteorder not in "=|" else dtype.name)
    return entry


def build_manifest(
    files: Mapping[str, Path], *, tool: str, arguments: Mapping[str, Any], sha256: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The manifest of a folder that will hold ``files`` (name -> the file to read now); ``sha256``: hashes
    the writer computed already, by name."""
    sha256 = sha256 or {}
    for name in files:
        if not is_listed_name(name):
            raise ValueError(f"{name!r} is not a name a manifest lists")
    parts = {}
    for part in PARTS:
        if f"{part}_label.pkl" in files:
            labels = load_labels(Path(files[f"{part}_label.pkl"]))[1].tolist()
            counts = Counter(labels)
            parts[part] = {"samples": len(labels), "class_counts": {str(k): counts[k] for k in sorted(counts)}}
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "tool": tool,
        "arguments": json.loads(json.dumps(dict(arguments), default=str)),
        "project_version": project_version(),
        "files": {name: file_entry(Path(files[name]), name, sha256.get(name)) for name in sorted(files)},
        "parts": parts,
    }


def manifest_text(manifest: Mapping[str, Any]) -> str:
    """The JSON text of a manifest, as written to ``manifest.json``."""
    return json.dumps(manifest, indent=2) + "\n"


def write_manifest(folder: str | os.PathLike, *, tool: str, arguments: Mapping[str, Any]) -> Path:
    """Hash every listed file of ``folder`` and write its ``manifest.json`` atomically; returns its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a folder")
    check_committed(folder)  # the files of a half-replaced folder are not to be recorded as its contents
    manifest = build_manifest({p.name: p for p in listed_files(folder)}, tool=tool, arguments=arguments)
    return atomic_write_bytes(folder / MANIFEST_NAME, manifest_text(manifest).encode("utf-8"))


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of ``folder``, checked for its format (not its entries); ManifestError otherwise."""
    path = Path(folder) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        write = f"write one with: python data_gen/manifest.py write {folder}"
        raise ManifestError(f"{path}: no manifest ({write})") from None
    except (OSError, UnicodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: 'format' is not {MANIFEST_FORMAT!r}")
    if not isinstance(manifest.get("files"), dict):
        raise ManifestError(f"{path}: 'files' must map file names to entries")
    return manifest


def _cheap_mismatch(folder: Path, name: str, entry: Any) -> str | None:
    """A malformed entry (a name outside the folder is never opened), a missing file, its size and (for .npy)
    its header's shape and dtype against the entry: one line, or None."""
    if not is_listed_name(name):
        return f"{folder}: {MANIFEST_NAME} lists {name!r}, which is not a file of this folder (not read)"
    where = f"{folder / name}: the {MANIFEST_NAME} entry"
    if not isinstance(entry, dict):
        return f"{where} is {type(entry).__name__}, not an object"
    size, digest = entry.get("size"), entry.get("sha256")
    if type(size) is not int or size < 0:
        return f"{where} has 'size' {size!r}, not a byte count"
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        return f"{where} has 'sha256' {digest!r}, not 64 hex digits"
    shape, dtype = entry.get("shape", []), entry.get("dtype", "u1")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        return f"{where} has 'shape' {shape!r}, not a list of sizes"
    try:
        np.dtype(dtype)
    except (TypeError, ValueError):
        return f"{where} has 'dtype' {dtype!r}, not a NumPy dtype"
    path = folder / name
    if not path.is_file():
        return f"{path}: missing (listed in {MANIFEST_NAME})"
    size = path.stat().st_size
    if size != entry["size"]:
        return f"{path}: {size} bytes, {MANIFEST_NAME} says {entry['size']}"
    if "shape" in entry:
        try:
            shape, dtype, _, _ = read_npy_header(path)
        except UsageError as error:
            return str(error)
        recorded = (tuple(entry["shape"]), np.dtype(entry.get("dtype", dtype)))
        if (shape, dtype) != recorded:
            return f"{path}: shape {shape} dtype {dtype}, {MANIFEST_NAME} says {recorded[0]} {recorded[1]}"
    return None


def quick_check(folder: str | os.PathLike) -> list[str]:
    """Sizes and .npy headers of the listed files against the manifest: one line per mismatch; no hashing."""
    folder = Path(folder)
    lines = (_cheap_mismatch(folder, name, entry) for name, entry in read_manifest(folder)["files"].items())
    return [line for line in lines if line is not None]


def verify(folder: str | os.PathLike) -> list[str]:
    """One line per mismatch of the listed files (sha256 included) and per file not listed; ManifestError
    (DataFileError for a folder a converter left half-replaced) when it cannot be read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a folder")
    check_committed(folder)
    manifest = read_manifest(folder)
    lines = []
    for name, entry in manifest["files"].items():
        line = _cheap_mismatch(folder, name, entry)
        if line is None and (digest := sha256_of(folder / name)) != entry["sha256"]:
            says = f"{MANIFEST_NAME} says {entry['sha256'][:12]}..."
            line = f"{folder / name}: sha256 {digest[:12]}..., {says} (same size: changed in place)"
        lines += [line] if line else []
    lines.extend(f"{p}: not listed in {MANIFEST_NAME}" for p in listed_files(folder) if p.name not in manifest["files"])
    return lines


_WARNED: set[str] = set()


def warn_if_mismatch(folder: str | os.PathLike) -> list[str]:
    """For the datasets: the cheap check of ``folder`` (with a manifest) once per process, as one warning."""
    folder = Path(folder)
    if str(folder.resolve()) in _WARNED or not (folder / MANIFEST_NAME).is_file():
        return []
    _WARNED.add(str(folder.resolve()))
    try:
        lines = quick_check(folder)
    except ManifestError as error:
        lines = [str(error)]
    if lines:
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        check = f"check with: python data_gen/manifest.py verify {folder}"
        warnings.warn(f"{folder} does not match its {MANIFEST_NAME}: {lines[0]}{more}; {check}", stacklevel=2)
    return lines
