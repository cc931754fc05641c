"""Micro-batching: one worker thread applies a batch function to items submitted from any thread.

Items that arrive while the worker is busy, or within ``max_wait`` seconds of the first item of a batch, share one
call of the function (one forward pass), so throughput grows with load instead of queueing one item at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from extractor.errors import AlexfeatError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Run ``fn(items) -> results`` (one result per item, in order) on batches of submitted items, in one thread.

    ``submit`` returns a ``concurrent.futures.Future``; a cancelled future's item is left out of its batch.
    ``batch_sizes()`` counts the batches run so far by size.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        max_batch: int = 32,
        max_wait: float = 0.005,
        name: str = "micro-batcher",
    ) -> None:
        if max_batch < 1 or max_wait < 0:
            raise AlexfeatError(f"max_batch must be at least 1 and max_wait at least 0, got {max_batch}, {max_wait}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._sizes: Counter[int] = Counter()
        self._sizes_lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future[R]:
        """Queue ``item`` for the next batch; its future gets its result or the batch's exception."""
        if self._closed:
            raise AlexfeatError("the micro-batcher is closed")
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future

    def batch_sizes(self) -> Counter[int]:
        """The batches run so far: size → count (a copy)."""
        with self._sizes_lock:
            return self._sizes.copy()

    def close(self) -> None:
        """Finish the queued items, then stop the worker thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def _collect(self, first: tuple[T, Future[R]]) -> tuple[list[tuple[T, Future[R]]], bool]:
        """The batch that starts with ``first``: whatever is queued, and what arrives within ``max_wait``."""
        batch, deadline = [first], time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:
                return batch, True
            batch.append(entry)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._collect(first)
            live = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
            if not live:
                continue
            with self._sizes_lock:
                self._sizes[len(live)] += 1
            try:
                results = self.fn([item for item, _ in live])
            except BaseException as exc:  # the callers get the error; the worker keeps serving
                for _, future in live:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(live, results):
                future.set_result(result)
