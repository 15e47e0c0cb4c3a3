"""The command-line side data_gen's tools share: their common flags, one-line warnings, one-line errors,
exit statuses and the summary they print.

A tool's ``main`` parses its flags, then hands the work to :func:`run_tool`::

    def main(argv=None) -> int:
        parser = build_parser()
        args = parser.parse_args(argv)
        return run_tool(parser.prog, lambda: summary_lines(...))

Exit statuses: 0 done; 2 bad input, a folder another run holds, or an output that cannot be written
(``prog: error: MESSAGE``, one line, nothing half-written left); 1 any other error of the system (an
``OSError`` the tool did not expect), also as one line. argparse's own usage errors exit 2 before.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from common.constants import DATASETS
from common.io import UsageError
from common.locking import LockHeld
from common.manifest import ManifestError
from data_gen.writer import SKIPPED_LIST, DataGenError

INPUT_ERROR = 2
RUN_FAILED = 1

# What the user fixes (input, flags, a folder in use, an unwritable output): exit 2. ManifestError and
# common.io's OutputError are ValueErrors, but a bare ValueError from deep inside is a bug: traceback.
BAD_INPUT = (DataGenError, LockHeld, ManifestError, UsageError)


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """``warnings.formatwarning`` of the tools: ``warning: <message>``, one line."""
    return f"warning: {message}\n"


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings print as ``warning: MESSAGE`` inside the block (without the file and line of the code)."""
    previous = warnings.formatwarning
    warnings.formatwarning = one_line_warning
    try:
        yield
    finally:
        warnings.formatwarning = previous


def error(prog: str, message: object, code: int = INPUT_ERROR) -> int:
    """``prog: error: MESSAGE`` on stderr; returns ``code``."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    return code


def run_tool(prog: str, work: Callable[[], Iterable[str]]) -> int:
    """Run ``work`` with one-line warnings, print the lines it returns on stdout, return the exit status."""
    try:
        with one_line_warnings():
            lines = list(work())
    except BAD_INPUT as exc:
        return error(prog, exc)
    except OSError as exc:
        return error(prog, exc, RUN_FAILED)
    for line in lines:
        sys.stdout.write(line + "\n")
    return 0


def summary_lines(
    out_folder: Path, written: Mapping[str, Mapping[str, int]], skipped: int, noun: str, skip_bad: bool
) -> list[str]:
    """``OUT/xsub: train 40, val 20`` per folder written, then how many ``noun`` (e.g. ``file(s)``) were
    skipped: with ``--skip-bad``, or whenever some were."""
    lines = [
        f"{out_folder / name}: {', '.join(f'{part} {count}' for part, count in parts.items())}"
        for name, parts in written.items()
    ]
    if skipped:
        lines.append(f"skipped {skipped} {noun}, listed in {out_folder / SKIPPED_LIST}")
    elif skip_bad:
        lines.append(f"skipped 0 {noun.replace('(s)', 's')}")
    return lines


# -- flags -------------------------------------------------------------------------------------------


def workers_count(text: str) -> int:
    """argparse type of ``--workers``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def add_conversion_args(
    parser: argparse.ArgumentParser, *, out_defaults: Iterable[str], workers_help: str, skip_help: str
) -> None:
    """The flags of the converters that write split folders: ``--out-folder``, ``--workers``,
    ``--skip-bad`` and ``--no-progress``."""
    parser.add_argument(
        "--out-folder",
        "--out_folder",
        dest="out_folder",
        help=f"where to write <benchmark>/... (default {' or '.join(out_defaults)})",
    )
    parser.add_argument("--workers", type=workers_count, default=1, help=f"{workers_help} (default 1)")
    parser.add_argument("--skip-bad", "--skip_bad", dest="skip_bad", action="store_true", help=skip_help)
    add_progress_arg(parser)


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_split_folder_args(parser: argparse.ArgumentParser) -> None:
    """``--data-root`` and ``--dataset``: the tools that read prepared split folders."""
    parser.add_argument(
        "--data-root",
        "--data_root",
        dest="data_root",
        required=True,
        help="folder holding <dataset folder>/<benchmark>/, e.g. ./data",
    )
    parser.add_argument("--dataset", required=True, choices=list(DATASETS))
