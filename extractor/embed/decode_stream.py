"""The embed job's decode stage at scale: files decoded in worker processes, in order, surviving worker deaths.

Files travel to the workers in chunks bounded by count and by bytes (:func:`chunks`): small photos go 16 to a
message, so that a parent busy importing TensorFlow keeps up with few messages; a large photo goes alone, so the
last chunks of a job end together and no core waits on another's long chunk.

A worker that dies (the out-of-memory killer, a crash in an image library) costs no finished work: the files of
the chunk it lost are decoded again one per process, a file that kills its process again is recorded as
``crashed``, and the rest go on. A file whose decoding takes more than ``max_seconds`` of CPU (a decoder looping
on a hostile file) is stopped by the kernel, which ends its process (``SIGPROF``), and recorded as ``timeout``.
When files keep "crashing" one after another with nothing decoded in between, the cause is the system, not the
files: the stream stops with :class:`WorkerDied` instead of recording them.

Entries in an object store are fetched here, ahead of the decode processes (:func:`fetched_ahead`: threads, each
chunk's objects concurrently, ``FETCH_CHUNKS`` chunks in flight), and their bytes travel with the chunk: a decode
process then never waits on the network, and fetching overlaps both decoding and inference. Local files are read
by the decode processes themselves.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from extractor.images.discover import FileEntry
from extractor.images.file_decoder import Decoded, Failed, FileDecoder
from extractor.images.sources import is_url, read_entries
from extractor.parallel.stream import WorkerDied, ordered_map

log = logging.getLogger(__name__)

CHUNK_FILES = 16
"""Most files per message to a decode process."""

CHUNK_BYTES = 4 * 2**20
"""Most bytes of files per message (a chunk holds at least one file): about 50 ms of decoding for JPEG photos."""

MAX_DECODE_SECONDS = 60.0
"""CPU seconds a file may take to decode in a worker process (the largest legal image takes a few)."""

CRASHES_IN_A_ROW = 8
"""Files in a row that each end a fresh decode process before the system, not the files, is blamed."""

FETCH_THREADS = 4
FETCH_CHUNKS = 8
"""Chunks of object-store entries being fetched at once (up to 128 objects in flight), ahead of the decoders."""


@dataclass(frozen=True)
class Fetched:
    """A chunk of entries with their bytes (or each one's read error), fetched ahead of its decode process."""

    entries: list[FileEntry]
    data: list[bytes | OSError]


def fetched_ahead(tasks: Iterator[list[FileEntry]]) -> Iterator[Fetched]:
    """Each chunk with its bytes, in order, fetched in ``FETCH_THREADS`` threads ``FETCH_CHUNKS`` chunks ahead."""
    return ordered_map(lambda chunk: Fetched(chunk, read_entries(chunk)), tasks, FETCH_THREADS, FETCH_CHUNKS)


def chunks(
    entries: Sequence[FileEntry], start: int = 0, max_files: int = CHUNK_FILES, max_bytes: int = CHUNK_BYTES
) -> Iterator[list[FileEntry]]:
    """Consecutive runs of ``entries[start:]`` of at most ``max_files`` files and ``max_bytes`` bytes (or one
    file), made as they are asked for."""
    current: list[FileEntry] = []
    held = 0
    for i in range(start, len(entries)):
        entry = entries[i]
        if current and (len(current) == max_files or held + entry.size > max_bytes):
            yield current
            current, held = [], 0
        current.append(entry)
        held += entry.size
    if current:
        yield current


def decode_stream(
    decoder: FileDecoder,
    entries: Sequence[FileEntry],
    workers: int,
    in_flight: int,
    max_seconds: float | None = MAX_DECODE_SECONDS,
) -> Generator[Decoded | Failed, None, None]:
    """``decoder`` over ``entries`` in order, on ``workers`` processes (0: in this thread, with no time limit),
    about ``in_flight`` files ahead (fewer when files are large; at least four chunks per worker), each file
    limited to ``max_seconds`` of CPU (None: no limit). Close the stream (``contextlib.closing``) when stopping
    early: that cancels the chunks not yet started."""
    if workers <= 0:
        yield from map(decoder, entries)
        return
    ahead = max(4 * workers, in_flight // CHUNK_FILES)
    limited = CpuLimited(decoder, max_seconds)
    yield from _blaming_the_system(_decode_in_processes(limited, entries, workers, ahead, CHUNK_FILES))


@dataclass(frozen=True)
class CpuLimited:
    """``decoder.many`` for a worker process, each file limited to ``seconds`` of the process's CPU time: over
    it, the kernel's ``SIGPROF`` ends the process, wherever the decoder is stuck (in C code too). No limit where
    the system has no interval timers (Windows), where ``seconds`` is None, or outside a worker process's main
    thread (the threads that stand in where processes cannot start: the signal would end the caller)."""

    decoder: FileDecoder
    seconds: float | None

    def __call__(self, task: list[FileEntry] | Fetched) -> list[Decoded | Failed]:
        entries, fetched = (task.entries, task.data) if isinstance(task, Fetched) else (task, None)
        if self.seconds is None or not hasattr(signal, "setitimer") or not _in_a_worker_process():
            return self.decoder.many(entries, fetched)
        Image.init()  # Pillow loads its format plugins once per process: not the file's time
        signal.signal(signal.SIGPROF, signal.SIG_DFL)  # the default action ends the process
        data, seconds = (fetched, 0.0) if fetched is not None else self.decoder.read(entries)  # not timed
        try:
            results = []
            for entry, d in zip(entries, data):
                signal.setitimer(signal.ITIMER_PROF, self.seconds)
                results.append(self.decoder.decode_read(entry, d, seconds))
            return results
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)


def _in_a_worker_process() -> bool:
    """Whether this is the main thread of a process that ``multiprocessing`` started."""
    return multiprocessing.parent_process() is not None and threading.current_thread() is threading.main_thread()


def _decode_in_processes(
    limited: CpuLimited, entries: Sequence[FileEntry], workers: int, ahead: int, max_files: int
) -> Iterator[Decoded | Failed]:
    done = 0  # files passed on
    remote = any(is_url(entry.abs_path) for entry in entries)
    while done < len(entries):
        tasks: Iterator[Any] = chunks(entries, done, max_files)
        if remote:  # fetched here; the processes' queue stays short so that the first results come soon
            tasks = fetched_ahead(tasks)
        results = ordered_map(limited, tasks, workers, min(ahead, 4 * workers) if remote else ahead, processes=True)
        try:
            for chunk in results:
                yield from chunk
                done += len(chunk)
        except WorkerDied as exc:
            if not exc.started:  # no file is to blame
                raise
            lost = next(chunks(entries, done, max_files))
            if len(lost) == 1 and workers == 1:  # alone in a fresh process: this file ended it
                yield _ended_its_process(lost[0], exc.exitcode, limited.seconds)
            else:
                log.warning(
                    "a decode worker process ended (exit status %s); decoding its %d files one per process",
                    exc.exitcode,
                    len(lost),
                )
                yield from _decode_in_processes(limited, lost, 1, 1, 1)
            done += len(lost)
        finally:
            results.close()
            if isinstance(tasks, Generator):
                tasks.close()


def _ended_its_process(entry: FileEntry, exitcode: int | None, seconds: float | None) -> Failed:
    """The record of a file that ended the process decoding it alone: over its CPU time, or a crash."""
    if hasattr(signal, "SIGPROF") and exitcode == -signal.SIGPROF:
        log.warning("decoding %s took more than %g s of CPU: stopped", entry.path, seconds)
        return Failed(
            entry,
            "timeout",
            f"decoding took more than {seconds:g} s of CPU time (a hostile or pathological file); stopped",
            0.0,
        )
    log.warning("decoding %s ended its worker process", entry.path)
    return Failed(
        entry,
        "crashed",
        "decoding this file ended its worker process (out of memory, or a crash in the image library)",
        0.0,
    )


def _blaming_the_system(results: Iterator[Decoded | Failed]) -> Iterator[Decoded | Failed]:
    """Pass ``results`` on, holding back ``crashed`` ones until a file decodes (or fails otherwise) after them;
    raise ``WorkerDied`` when ``CRASHES_IN_A_ROW`` are held, or when nothing but crashes came at all (two or
    more: a job of one file that crashes records it)."""
    held: list[Failed] = []
    settled = False  # a result other than a crash has come
    for result in results:
        if isinstance(result, Failed) and result.error == "crashed":
            held.append(result)
            if len(held) >= CRASHES_IN_A_ROW:
                raise _system_blamed(len(held))
            continue
        settled = True
        yield from held
        held.clear()
        yield result
    if len(held) > 1 and not settled:
        raise _system_blamed(len(held))
    yield from held


def _system_blamed(count: int) -> WorkerDied:
    return WorkerDied(
        f"{count} files in a row ended their decode processes one by one: the system, not the files, "
        "is the likely cause (out of memory, or a script without an `if __name__ == '__main__':` "
        "guard); finished work is kept"
    )
