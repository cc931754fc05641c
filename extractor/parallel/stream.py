"""Streaming helpers shared by the embed job and predict: an ordered, bounded pool map and batching."""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, Generic, TypeVar

from extractor.parallel.process_pool import ProcessPool, WorkerDied

__all__ = ["WorkerDied", "batched", "ordered_map", "usable_cpus"]

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, in_flight: int, processes: bool = False
) -> Generator[R, None, None]:
    """``map(fn, items)`` on a pool of ``workers`` threads (or processes), in order, with at most ``in_flight``
    items submitted ahead. ``workers`` 0 maps in the calling thread.

    Processes (``extractor.parallel.process_pool``) suit CPU-bound Python work (Pillow parses image headers in Python)
    next to another busy thread: threads would queue on the GIL. ``fn`` must then be picklable, and a script that
    starts them needs the usual ``if __name__ == "__main__":`` guard; a dead worker raises ``WorkerDied``. Where
    processes cannot start, threads are used, with a warning. Closing the iterator early cancels what has not
    started.
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    pool = (_process_pool(fn, workers) if processes else None) or _ThreadPool(fn, workers)
    pending: collections.deque[Any] = collections.deque()  # each has result(): a Future or a process worker
    try:
        for item in items:
            pending.append(pool.submit(item))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.close(cancel=bool(pending))


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _ThreadPool(Generic[T, R]):
    """``fn`` on ``count`` threads, with ProcessPool's interface."""

    def __init__(self, fn: Callable[[T], R], count: int) -> None:
        self._fn = fn
        self._executor = concurrent.futures.ThreadPoolExecutor(count, thread_name_prefix="stream")

    def submit(self, item: T) -> concurrent.futures.Future[R]:
        return self._executor.submit(self._fn, item)

    def close(self, cancel: bool) -> None:
        self._executor.shutdown(wait=True, cancel_futures=cancel)


def _process_pool(fn: Callable[[T], R], workers: int) -> ProcessPool[T, R] | None:
    """Started worker processes, or None where this system cannot start them (with a warning)."""
    try:
        return ProcessPool(fn, workers)
    except (OSError, ImportError, NotImplementedError) as exc:
        log.warning("worker processes are not available here (%s): using threads", exc)
        return None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset), not the whole host's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
