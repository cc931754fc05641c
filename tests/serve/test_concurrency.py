"""MicroBatcher (one worker thread, batches of what arrives together, errors to every caller of the batch) and
CheapOnLoop (queries on the event loop while cheap, in threads once not)."""

from __future__ import annotations

import threading
import time

import pytest

from extractor.errors import AlexfeatError
from index.serve.batcher import MicroBatcher

anyio = pytest.importorskip("anyio")
from index.serve.app import CheapOnLoop  # noqa: E402  (needs the serve extra)


def test_items_submitted_together_share_a_batch_and_keep_their_order() -> None:
    seen: list[list[int]] = []
    gate = threading.Event()

    def square(items: list[int]) -> list[int]:
        gate.wait(5)  # the first batch holds the worker while the rest queue up
        seen.append(items)
        return [i * i for i in items]

    batcher = MicroBatcher(square, max_batch=4, max_wait=0.0)
    futures = [batcher.submit(i) for i in range(9)]
    time.sleep(0.05)
    gate.set()
    assert [f.result(5) for f in futures] == [i * i for i in range(9)]
    batcher.close()
    assert [i for batch in seen for i in batch] == list(range(9)) and all(len(b) <= 4 for b in seen)
    assert len(seen) <= 5 and batcher.batch_sizes()[4] >= 1  # what queued behind the held batch went in fours


def test_an_item_arriving_within_max_wait_joins_the_batch() -> None:
    batcher = MicroBatcher(lambda items: [len(items)] * len(items), max_batch=8, max_wait=0.5)
    first = batcher.submit("a")
    time.sleep(0.05)
    second = batcher.submit("b")
    assert (first.result(5), second.result(5)) == (2, 2)
    batcher.close()


def test_an_error_reaches_every_caller_of_its_batch_and_the_worker_goes_on() -> None:
    def fail_on_bad(items: list[str]) -> list[str]:
        if "bad" in items:
            raise ValueError("bad item")
        return [i.upper() for i in items]

    batcher = MicroBatcher(fail_on_bad, max_batch=8, max_wait=0.2)
    futures = [batcher.submit("ok"), batcher.submit("bad")]
    for future in futures:
        with pytest.raises(ValueError, match="bad item"):
            future.result(5)
    assert batcher.submit("fine").result(5) == "FINE"
    batcher.close()


def test_cancelled_items_are_skipped_and_close_finishes_the_queue() -> None:
    gate, ran = threading.Event(), []

    def record(items: list[int]) -> list[int]:
        gate.wait(5)
        ran.extend(items)
        return items

    batcher = MicroBatcher(record, max_batch=1, max_wait=0.0)
    held, dropped, last = batcher.submit(1), batcher.submit(2), batcher.submit(3)
    assert dropped.cancel()
    gate.set()
    batcher.close()
    assert (held.result(), last.result()) == (1, 3) and ran == [1, 3]
    with pytest.raises(AlexfeatError, match="closed"):
        batcher.submit(4)


def test_cheap_queries_run_on_the_event_loop_and_costly_ones_in_worker_threads() -> None:
    runner = CheapOnLoop(anyio.CapacityLimiter(2), inline_below=0.002)

    def costly() -> int:
        end = time.thread_time() + 0.02  # 20 ms of CPU
        while time.thread_time() < end:
            pass
        return threading.get_ident()

    async def main() -> None:
        loop = threading.get_ident()
        assert await runner(threading.get_ident) == loop
        assert await runner(costly) == loop  # measured: the running mean is now over 2 ms
        assert await runner(costly) != loop
        assert await runner(threading.get_ident) != loop
        for _ in range(20):  # cheap again: the mean decays and queries come back to the loop
            await runner(threading.get_ident)
        assert await runner(threading.get_ident) == loop

    anyio.run(main)
