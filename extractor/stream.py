"""Streaming helpers shared by the embed job and predict: an ordered, bounded pool map and batching."""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, TypeVar

from extractor.errors import AlexfeatError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, in_flight: int,
                processes: bool = False) -> Iterator[R]:
    """``map(fn, items)`` on a pool of ``workers`` threads (or processes), in order, with at most ``in_flight``
    items submitted ahead. ``workers`` 0 maps in the calling thread.

    Processes suit CPU-bound Python work (Pillow parses image headers in Python) next to another busy thread:
    threads would queue on the GIL. They are started with ``spawn`` (safe beside running threads; a script that
    starts them needs the usual ``if __name__ == "__main__":`` guard), run at nice 10 so that the caller's own
    work comes first and they fill the idle cycles, ignore Ctrl-C (the caller handles it) and exit when the
    calling process dies, even by SIGKILL. Where processes cannot start (no semaphores), threads are used, with a
    warning. Closing the iterator early cancels what has not started.
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    pool = _process_pool(workers) if processes else None
    if pool is None:
        pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="stream")
    pending: collections.deque[concurrent.futures.Future[R]] = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= in_flight:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


def _result(future: concurrent.futures.Future[R]) -> R:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise AlexfeatError("a worker process died unexpectedly (killed, out of memory, or started from a script "
                            "without an `if __name__ == '__main__':` guard); finished work is kept") from exc


def _process_pool(workers: int) -> concurrent.futures.Executor | None:
    """A pool of ``workers`` processes, or None where this system cannot run one (no semaphores, e.g. without
    /dev/shm in some containers and serverless runtimes)."""
    try:
        return concurrent.futures.ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"),
                                                      initializer=_init_worker, initargs=(os.getpid(),))
    except (OSError, ImportError, NotImplementedError) as exc:
        log.warning("worker processes are not available here (%s): using threads", exc)
        return None


def _init_worker(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(10)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), name="watch-parent", daemon=True).start()


def _exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """A worker blocked on its queue never notices a parent killed by SIGKILL: poll and leave."""
    while os.getppid() == parent_pid:
        time.sleep(interval)
    os._exit(1)
