"""Streaming helpers shared by the embed job and predict: an ordered, bounded thread-pool map and batching."""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, in_flight: int) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, in order, with at most ``in_flight`` items submitted ahead."""
    if workers <= 0:
        yield from map(fn, items)
        return
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        pending: collections.deque[concurrent.futures.Future[R]] = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


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
