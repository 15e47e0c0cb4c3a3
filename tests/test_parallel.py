"""data_gen.parallel.imap_ordered: order, bounded window, and shutdown that never hangs."""

from __future__ import annotations

import threading
import time

import pytest

from data_gen.parallel import imap_ordered


def _square_slowly(x: int) -> int:
    time.sleep(0.001 * (x % 3))  # finish out of order
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_input_order(workers):
    assert list(imap_ordered(_square_slowly, range(40), workers, chunksize=3, window=1)) == [x * x for x in range(40)]


def _run_with_watchdog(target, seconds: float = 120.0) -> None:
    done = threading.Event()
    errors: list[BaseException] = []

    def body():
        try:
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=body, daemon=True).start()
    assert done.wait(seconds), f"imap_ordered did not shut down within {seconds} s"
    if errors:
        raise errors[0]


def test_consumer_stopping_early_shuts_the_pool_down():
    # The case that hung with Pool.terminate(): a consumer that stops while workers are still writing
    # results (e.g. data_gen meeting a truncated file). Repeated, because the race is rare.
    def stop_early_many_times():
        for round_ in range(15):
            results = imap_ordered(_square_slowly, range(500), 2, chunksize=4, window=8)
            for _ in range(round_ % 4 + 1):
                next(results)
            results.close()

    _run_with_watchdog(stop_early_many_times)


def test_consumer_error_propagates_after_shutdown():
    def consume_then_fail():
        with pytest.raises(RuntimeError, match="bad file"):
            for value in imap_ordered(_square_slowly, range(300), 2, chunksize=4):
                if value == 49:
                    raise RuntimeError("bad file")

    _run_with_watchdog(consume_then_fail)
