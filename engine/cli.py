"""The terminal side the three entry points share: argparse's exit as a status, the one-line error
(``prog: error: MESSAGE`` on stderr and exit status 2, said by rank 0 alone under torchrun), printing
from rank 0 and progress bars.

This is the one module of ``common`` that writes to the terminal, and only the scripts import it; the
library modules print nothing and take a progress display from their caller (e.g.
``engine.evaluation.evaluate(..., progress=progress_bars(ctx))``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tqdm import tqdm

from engine.launch import DistContext, env_is_main_process

# Exit status of a run stopped by bad input (argparse's own).
INPUT_ERROR = 2


def exit_status(exc: SystemExit) -> int:
    """argparse's exit (it has printed the usage and its one-line error, or the help) as a status."""
    return exc.code if isinstance(exc.code, int) else INPUT_ERROR


def error(prog: str, message: object, code: int = INPUT_ERROR) -> int:
    """``prog: error: MESSAGE`` on stderr (from rank 0 alone under torchrun); returns ``code``."""
    if env_is_main_process():
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return code


def run_main(
    prog: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], Any],
    argv: Sequence[str] | None,
) -> int:
    """An evaluation script's ``main``: parse ``argv`` with the script's parser, run, and return the exit
    status. Bad input -- a
    :class:`common.io.UsageError`, or the ValueError / FileNotFoundError with which the data and
    checkpoint readers name a missing or malformed file -- is one :func:`error` line and status 2.
    Errors of the program itself keep their traceback."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exit_status(exc)
    try:
        run(args)
    except (FileNotFoundError, ValueError) as exc:
        return error(prog, exc)
    return 0


def rank0_printer(ctx: DistContext) -> Callable[[str], None]:
    """``print`` (flushed) on rank 0, nothing on the other ranks."""
    return (lambda line: print(line, flush=True)) if ctx.is_main else (lambda line: None)


def progress_bars(ctx: DistContext) -> Callable[[Iterable[Any], str], tqdm]:
    """Progress bars on stderr for the loops of :mod:`engine.evaluation`, shown on rank 0 only."""

    def bar(iterable: Iterable[Any], desc: str) -> tqdm:
        return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr, disable=not ctx.is_main)

    return bar
