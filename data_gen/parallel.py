"""Ordered parallel map for the converters: results in input order, bounded memory, clean shutdown.

``Pool.terminate()`` (also what leaving ``with Pool()`` calls) kills workers that may hold the result
queue's lock, and then waits for that lock forever. So the pool here is never terminated: when the
consumer stops (a bad file, Ctrl-C, a finished run) no new input is handed out and the workers finish
the few items they hold. Workers ignore SIGINT (Ctrl-C is the main process's to handle) and end quietly
on SIGTERM.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Iterable, Iterator
from typing import Callable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not common.cli's handler, inherited by the fork


def imap_ordered(
    func: Callable[[T], R], items: Iterable[T], workers: int, *, chunksize: int = 1, window: int = 32
) -> Iterator[R]:
    """``func(item)`` for every item, in input order, from ``workers`` processes (in-process for 1); at most
    ``window`` items per worker (whole chunks) in flight, so results never pile up faster than they are taken."""
    if workers <= 1:
        for item in items:
            yield func(item)
        return
    # A chunk is only dispatched once complete, so the window must hold whole chunks.
    in_flight = threading.Semaphore(max(window, 2 * chunksize) * workers)
    stop = threading.Event()

    def feed() -> Iterator[T]:  # runs in the pool's task thread; blocks while the window is full
        for item in items:
            while not in_flight.acquire(timeout=0.1):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            yield item

    pool = multiprocessing.get_context().Pool(workers, initializer=_ignore_signals)
    try:
        for result in pool.imap(func, feed(), chunksize=chunksize):
            yield result
            in_flight.release()
    finally:
        stop.set()  # the feeder returns at its next item, so the task thread sends the workers' sentinels
        pool.close()
        pool.join()
