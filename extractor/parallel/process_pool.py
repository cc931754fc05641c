"""Worker processes for ``extractor.parallel.stream.ordered_map``: one pipe pair per worker, results read as they come.

Built on ``multiprocessing`` pipes rather than ``ProcessPoolExecutor``, whose manager thread (Python 3.11) can miss
a worker killed right after it was spawned on demand and then waits forever. Here each worker is started once
(``spawn``: safe beside running threads), items go to the workers in turn, and a reader thread per worker drains
its results into a queue, so a worker never waits for the consumer's order. A worker's death is its result pipe's
end of file: the consumer gets ``WorkerDied``, never a hang. A worker says it is ready before its first item, so a
worker that could not even start (a script without an ``if __name__ == "__main__":`` guard, a broken environment)
is told apart from one that an item ended or a signal killed (``WorkerDied.started``).

Workers run at nice 10 (the caller's own work comes first; they fill the idle cycles), ignore Ctrl-C (the caller
handles it) and exit when the calling process dies, even by SIGKILL.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, Generic, TypeVar

from extractor.errors import AlexfeatError

T = TypeVar("T")
R = TypeVar("R")
_DIED = object()  # put in a worker's result queue when its pipe ends
_NOT_STARTED = object()  # ... when it ends before the worker said it was ready
_STOP = object()  # put in a worker's task queue by close()


class WorkerDied(AlexfeatError):
    """A worker process ended abruptly (killed, e.g. by the out-of-memory killer, or crashed); ``exitcode`` is its
    exit status where known (``-N``: ended by signal N); ``started`` is False when it ended before it was ready."""

    def __init__(
        self,
        message: str = "a worker process died unexpectedly (killed, out of memory, or started "
        "from a script without an `if __name__ == '__main__':` guard); finished "
        "work is kept",
        exitcode: int | None = None,
        started: bool = True,
    ) -> None:
        super().__init__(message)
        self.exitcode = exitcode
        self.started = started


class Worker(Generic[T, R]):
    """One process applying ``fn`` to the items sent to it, in order."""

    def __init__(self, fn: Callable[[T], R], context: Any) -> None:
        tasks_in, self._tasks = context.Pipe(duplex=False)
        results, results_out = context.Pipe(duplex=False)
        _widen(results)
        self.process = context.Process(
            target=_serve, args=(fn, tasks_in, results_out, os.getpid()), name="alexfeat-worker", daemon=True
        )
        self.process.start()
        tasks_in.close()  # only the worker holds these ends now: its death closes the pipes
        results_out.close()
        self._results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._drain, args=(results,), name="worker-results", daemon=True).start()
        self._feeder = threading.Thread(target=self._feed, name="worker-tasks", daemon=True)
        self._feeder.start()

    def submit(self, item: T) -> Worker[T, R]:
        """Queue ``item`` for the worker (never blocks); the matching ``result()`` call returns its result
        (results come back in order)."""
        self._outbox.put(ForkingPickler.dumps(item))  # pickled here: an item that cannot be raises to the caller
        return self

    def result(self) -> R:
        """The result of the oldest item not yet collected (re-raises what ``fn`` raised)."""
        message = self._results.get()
        if message is _DIED or message is _NOT_STARTED:
            self._results.put(message)  # every later call fails the same way
            self.process.join(5)  # its pipe closed as it ended: collect the exit status
            code = self.process.exitcode
            if message is _NOT_STARTED and (code is None or code >= 0):  # it gave up starting (not killed)
                raise WorkerDied(
                    f"a worker process could not start (exit status {code}): a script that starts "
                    "alexfeat jobs needs an `if __name__ == '__main__':` guard, and the environment "
                    "must import it; finished work is kept",
                    exitcode=code,
                    started=False,
                )
            raise WorkerDied(exitcode=code)
        ok, value = message
        if not ok:
            raise value
        return value

    def close(self, cancel: bool) -> None:
        """Stop the worker: after its queued items, or at once with ``cancel``."""
        if cancel:
            self.process.terminate()  # a feeder blocked on the full pipe gets an error and stops
        self._outbox.put(_STOP)  # after the queued items
        self._feeder.join(5)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def _feed(self) -> None:
        """Send queued items through the pipe, which holds only ~64 KB: a sender blocked on a busy worker would
        otherwise hold up the caller, who may have other workers' results to collect."""
        try:
            while (data := self._outbox.get()) is not _STOP:
                self._tasks.send_bytes(data)
            self._tasks.send(None)  # the worker's signal to stop
        except OSError:  # the worker died: its result pipe's end reports it
            return
        finally:
            self._tasks.close()

    def _drain(self, results: Connection) -> None:
        started = False
        while True:
            try:
                message = results.recv()
            except (EOFError, OSError):
                self._results.put(_DIED if started else _NOT_STARTED)
                results.close()
                return
            if started:
                self._results.put(message)
            started = True  # the first message says the worker is ready


class ProcessPool(Generic[T, R]):
    """``count`` worker processes applying ``fn`` (picklable); items go to them in turn."""

    def __init__(self, fn: Callable[[T], R], count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.workers: list[Worker[T, R]] = []
        try:
            for _ in range(count):
                self.workers.append(Worker(fn, context))
        except BaseException:
            self.close(cancel=True)
            raise
        self._turns = itertools.cycle(self.workers)

    def submit(self, item: T) -> Worker[T, R]:
        """Send ``item`` to the next worker; that worker's next ``result()`` is its result."""
        return next(self._turns).submit(item)

    def close(self, cancel: bool) -> None:
        for worker in self.workers:
            worker.close(cancel)


PIPE_BYTES = 2**20
"""Result pipe capacity asked for (Linux; the default 64 KB makes a 2 MB result take 32 reads, each waiting for the
GIL, which a parent importing TensorFlow holds for up to 5 ms at a time, and the worker waits meanwhile)."""


def _widen(connection: Connection) -> None:
    """Ask for a ``PIPE_BYTES`` pipe where the system allows it (Linux ``F_SETPIPE_SZ``); keep the default otherwise."""
    try:
        import fcntl

        fcntl.fcntl(connection.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass


RESULTS_AHEAD = 4
"""Results a worker may hold while its pipe is full: it goes on working while the caller is slow to read (a caller
importing TensorFlow holds the GIL for up to ~0.5 s at a time, while loading its libraries)."""


def _serve(fn: Callable[[Any], Any], tasks: Connection, results: Connection, parent_pid: int) -> None:
    """The worker's loop: items in, ``(ok, result or exception)`` out through a sender thread, until ``None`` or the
    end of the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(10)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), name="watch-parent", daemon=True).start()
    results.send(None)  # ready
    outbox: queue.Queue[Any] = queue.Queue(RESULTS_AHEAD)
    sender = threading.Thread(target=_send, args=(outbox, results), name="send-results", daemon=True)
    sender.start()
    while True:
        try:
            item = tasks.recv()
        except EOFError:
            break
        if item is None:
            break
        try:
            outbox.put((True, fn(item)))
        except Exception as exc:
            outbox.put((False, exc))
    outbox.put(_STOP)
    sender.join()


def _send(outbox: queue.Queue[Any], results: Connection) -> None:
    """Send the worker's results in order; a caller gone (closed pipe) ends the worker."""
    while (message := outbox.get()) is not _STOP:
        try:
            results.send(message)
        except OSError:
            os._exit(1)


def _exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """A worker blocked on its pipe never notices a parent killed by SIGKILL: poll and leave."""
    while os.getppid() == parent_pid:
        time.sleep(interval)
    os._exit(1)
