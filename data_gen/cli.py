"""What data_gen's commands share on the command line: their common flags and their ``main``, which ends
through ``common.cli.run_main`` with system errors as one line (exit 0, 1, 2, 130, 143)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence

from common.cli import run_main
from common.constants import DATASETS


def run_tool(parser: argparse.ArgumentParser, work: Callable[..., Iterable[str]], argv: Sequence[str] | None) -> int:
    """A data tool's ``main``: parse ``argv``, print the lines ``work(args)`` returns; the exit status."""

    def run(args: argparse.Namespace) -> None:
        for line in work(args):
            print(line, flush=True)

    return run_main(parser.prog, parser, run, argv, system_errors=True)


def workers_count(text: str) -> int:
    """argparse type of ``--workers``: an integer >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def add_conversion_args(parser: argparse.ArgumentParser, *, out_defaults: Sequence[str], what: str, bad: str) -> None:
    """``--out-folder``, ``--workers``, ``--skip-bad`` and ``--no-progress`` of the converters."""
    default = " or ".join(out_defaults)
    parser.add_argument("--out-folder", "--out_folder", dest="out_folder", help=f"<benchmark>/... go here ({default})")
    parser.add_argument("--workers", type=workers_count, default=1, help=f"processes reading {what} (default 1)")
    help_ = f"skip {bad}, listed in OUT/skipped_samples.txt, instead of stopping"
    parser.add_argument("--skip-bad", "--skip_bad", dest="skip_bad", action="store_true", help=help_)
    add_progress_arg(parser)


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_split_folder_args(parser: argparse.ArgumentParser) -> None:
    """``--data-root`` and ``--dataset``: the tools that read prepared split folders."""
    where = "folder holding <dataset folder>/<benchmark>/"
    parser.add_argument("--data-root", "--data_root", dest="data_root", required=True, help=where)
    parser.add_argument("--dataset", required=True, choices=list(DATASETS))
