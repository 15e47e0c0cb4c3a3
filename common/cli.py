"""What every command does at its edge: parse, run, and turn the way it ended into one line and a status.

Exit statuses: 0 done; 1 the run failed (a non-finite loss, a mismatch found, an error of the system
such as a disk read error); 2 bad input, ``prog: error: MESSAGE`` (argparse's own errors too);
130 Ctrl-C and 143 SIGTERM, each with one line, after every ``finally`` has run (so no temporary file is
left). Anything else is a bug and keeps its traceback. Under torchrun only rank 0 prints these lines.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from common.io import UsageError

INPUT_ERROR, RUN_FAILED = 2, 1


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that clean-up runs as for Ctrl-C."""


class RunFailed(Exception):
    """The run itself failed (not the input): one line, exit status 1."""


def is_rank0() -> bool:
    """Rank 0 under torchrun, or a plain process (readable before any process group exists)."""
    return os.environ.get("RANK", "0") == "0"


def error(prog: str, message: object, code: int = INPUT_ERROR) -> int:
    """``prog: error: MESSAGE`` on stderr (rank 0 only); returns ``code``."""
    if is_rank0():
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return code


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings print as ``warning: MESSAGE`` inside the block, without the code's file and line."""
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, *rest, **kw: f"warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = previous


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def run_main(
    prog: str,
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], Any],
    argv: Sequence[str] | None,
    *,
    system_errors: bool = False,
) -> int:
    """A command's ``main``: parse ``argv``, ``run(args)`` (an int it returns is the status, anything
    else means 0). ``system_errors``: an OSError the command did not turn into bad input is one line and
    status 1 (the data tools: a read error of the disk is no bug of theirs)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else INPUT_ERROR
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        with one_line_warnings():
            code = run(args)
        return code if isinstance(code, int) else 0
    except UsageError as exc:
        return error(prog, exc)
    except RunFailed as exc:
        return error(prog, exc, RUN_FAILED)
    except KeyboardInterrupt:
        return error(prog, "interrupted (SIGINT)", 128 + signal.SIGINT)
    except Terminated:
        return error(prog, "terminated (SIGTERM)", 128 + signal.SIGTERM)
    except OSError as exc:
        if not system_errors:
            raise
        return error(prog, exc, RUN_FAILED)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
