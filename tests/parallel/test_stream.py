"""The streaming pieces of the embed job: ordered pool maps, worker processes, decoding during start-up."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from extractor.embed.decode_stream import CRASHES_IN_A_ROW, chunks, decode_stream
from extractor.embed.local import decoded_while_waiting
from extractor.errors import AlexfeatError
from extractor.images.decode import ResizeSpec
from extractor.images.discover import FileEntry, discover
from extractor.images.file_decoder import Decoded, Failed, FileDecoder
from extractor.parallel.process_pool import ProcessPool
from extractor.parallel.stream import WorkerDied, batched, ordered_map
from tests.imagefiles import make_photo


@pytest.mark.parametrize("workers, processes", [(0, False), (3, False), (2, True)])
def test_ordered_map_keeps_the_input_order(workers, processes):
    items = list(range(-40, 40))
    assert list(ordered_map(abs, items, workers, in_flight=5, processes=processes)) == [abs(i) for i in items]


def test_a_dead_worker_process_is_a_clear_error():
    with pytest.raises(AlexfeatError, match="worker process died"):
        list(ordered_map(os._exit, [3], workers=1, in_flight=1, processes=True))


def test_batched_splits_without_losing_the_tail():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]


def decoded(index: int) -> Decoded:
    entry = FileEntry(f"img_{index}.jpg", f"/nowhere/img_{index}.jpg", 1, 1)
    return Decoded(entry, np.zeros((100, 100, 3), np.uint8), 100, 100, b"\0" * 32, 0.0)


def test_decoding_continues_while_the_model_starts_up_to_the_memory_budget():
    batches = [[decoded(i), decoded(i + 1)] for i in range(0, 20, 2)] + [[Failed(decoded(99).entry, "corrupt", "x", 0)]]
    starting: concurrent.futures.Future = concurrent.futures.Future()
    per_batch = 2 * 100 * 100 * 3
    early = decoded_while_waiting(iter(batches), starting, max_bytes=3 * per_batch)
    assert early == batches[:3]  # stops once the budget is reached
    rest = iter(batches)
    assert decoded_while_waiting(rest, starting, max_bytes=10**9) == batches  # or when the input ends
    ready: concurrent.futures.Future = concurrent.futures.Future()
    ready.set_result(None)
    rest = iter(batches)
    assert decoded_while_waiting(rest, ready, max_bytes=10**9) == []  # a ready model takes them at once
    assert next(rest) == batches[0]


def test_threads_stand_in_where_processes_cannot_start(monkeypatch, caplog):
    def no_semaphores(method: str) -> None:
        raise OSError(38, "Function not implemented: sem_open")

    monkeypatch.setattr("extractor.parallel.process_pool.multiprocessing.get_context", no_semaphores)
    assert list(ordered_map(abs, [-1, -2, 3], workers=2, in_flight=2, processes=True)) == [1, 2, 3]
    assert "worker processes are not available here" in caplog.text


def test_the_decode_stage_falls_back_to_threads_with_its_cpu_limit_off(tmp_path, monkeypatch, caplog):
    def no_semaphores(method: str) -> None:
        raise OSError(38, "Function not implemented: sem_open")

    for i in range(3):
        make_photo(tmp_path / f"p{i}.jpg", (64, 48), seed=i)
    monkeypatch.setattr("extractor.parallel.process_pool.multiprocessing.get_context", no_semaphores)
    decoder = FileDecoder(ResizeSpec.parse("shorter256-center224"))
    results = list(decode_stream(decoder, list(discover(tmp_path)), workers=2, in_flight=8, max_seconds=0.001))
    assert [type(r) for r in results] == [Decoded] * 3  # no timer in this process: it would end it
    assert "worker processes are not available here" in caplog.text


class CrashingDecoder(FileDecoder):
    """Ends its process on files named ``crash*``: stands in for a file that kills an image library."""

    def decode_read(self, entry: FileEntry, data: bytes | OSError, seconds: float = 0.0) -> Decoded | Failed:
        if Path(entry.path).name.startswith("crash"):
            os._exit(70)
        return super().decode_read(entry, data, seconds)


def test_a_file_that_kills_its_decode_process_is_recorded_and_the_rest_decode(tmp_path):
    names = [f"img_{i:02d}.jpg" for i in range(40)]
    names[5], names[23] = "crash_a.jpg", "crash_b.jpg"
    for i, name in enumerate(names):
        make_photo(tmp_path / name, (64, 48), seed=i)
    entries = list(discover(tmp_path))
    results = list(decode_stream(CrashingDecoder(ResizeSpec.parse("squash227")), entries, workers=2, in_flight=64))
    assert [r.entry.path for r in results] == [e.path for e in entries]  # every file, in order
    crashed = [r.entry.path for r in results if isinstance(r, Failed)]
    assert crashed == ["crash_a.jpg", "crash_b.jpg"]
    assert all(r.error == "crashed" for r in results if isinstance(r, Failed))
    assert sum(isinstance(r, Decoded) for r in results) == 38


def test_a_crashing_file_after_the_others_is_recorded_not_blamed_on_the_system(tmp_path):
    for i in range(3):
        make_photo(tmp_path / f"a_{i}.jpg", (64, 48), seed=i)
    make_photo(tmp_path / "crash.jpg", (64, 48), seed=9)  # last, and alone in its chunk of one file
    results = list(decode_stream(CrashingDecoder(ResizeSpec.parse("squash227")), list(discover(tmp_path)), 2, 64))
    assert [type(r).__name__ for r in results] == ["Decoded"] * 3 + ["Failed"]
    assert results[-1].error == "crashed"


def test_a_job_of_one_crashing_file_records_it(tmp_path):
    make_photo(tmp_path / "crash.jpg", (64, 48), seed=0)
    [result] = decode_stream(CrashingDecoder(ResizeSpec.parse("squash227")), list(discover(tmp_path)), 2, 64)
    assert isinstance(result, Failed) and result.error == "crashed"


def test_files_crashing_one_after_another_blame_the_system_without_recording_them(tmp_path):
    make_photo(tmp_path / "a_ok.jpg", (64, 48), seed=0)
    for i in range(CRASHES_IN_A_ROW):
        make_photo(tmp_path / f"crash_{i}.jpg", (64, 48), seed=i)
    make_photo(tmp_path / "z_ok.jpg", (64, 48), seed=1)
    seen = []
    with pytest.raises(WorkerDied, match=f"{CRASHES_IN_A_ROW} files in a row"):
        for result in decode_stream(CrashingDecoder(ResizeSpec.parse("squash227")), list(discover(tmp_path)), 2, 64):
            seen.append(result)
    assert [r.entry.path for r in seen] == ["a_ok.jpg"]  # none of the crashes was passed on as the files' fault


def test_chunks_hold_many_small_files_and_a_large_file_alone():
    def entry(name: str, size: int) -> FileEntry:
        return FileEntry(path=name, abs_path=name, size=size, mtime_ns=0)

    small = [entry(f"s{i}", 50_000) for i in range(40)]
    large = [entry(f"l{i}", 5_000_000) for i in range(3)]
    files = small[:20] + large + small[20:]
    runs = [[e.path for e in chunk] for chunk in chunks(files, 0, 16, 4 * 2**20)]
    assert [len(run) for run in runs] == [16, 4, 1, 1, 1, 16, 4]
    assert sum(runs, []) == [e.path for e in files]  # every file once, in order
    assert [len(run) for run in chunks(files, 21, 16, 4 * 2**20)] == [1, 1, 16, 4]  # resumed from a position
    assert list(chunks([], 0, 16, 100)) == []


def _sleep_then_len(item: bytes) -> int:
    time.sleep(1.0)
    return len(item)


def test_submitting_to_a_busy_worker_never_blocks_the_caller():
    pool = ProcessPool(_sleep_then_len, 1)
    try:
        start = time.perf_counter()
        for _ in range(20):  # 1.3 MB of items for ~20 s of work: far more than a pipe holds (64 KB)
            pool.submit(b"x" * 65536)
        assert time.perf_counter() - start < 5.0
        assert pool.workers[0].result() == 65536
    finally:
        pool.close(cancel=True)


def _mark_then_big_result(item: tuple[str, int]) -> bytes:
    folder, index = item
    Path(folder, f"started-{index}").touch()
    return bytes(2**21)  # 2 MB: far more than a pipe holds


def test_a_worker_keeps_working_while_its_caller_is_too_busy_to_read(tmp_path):
    from extractor.parallel.process_pool import RESULTS_AHEAD, _serve

    context = multiprocessing.get_context("spawn")
    tasks_in, tasks = context.Pipe(duplex=False)
    results, results_out = context.Pipe(duplex=False)
    worker = context.Process(target=_serve, args=(_mark_then_big_result, tasks_in, results_out, os.getpid()))
    worker.start()
    try:
        assert results.recv() is None  # ready
        for index in range(RESULTS_AHEAD):
            tasks.send((str(tmp_path), index))
        deadline = time.monotonic() + 20
        while len(list(tmp_path.glob("started-*"))) < RESULTS_AHEAD and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(tmp_path.glob("started-*"))) == RESULTS_AHEAD  # not one result read yet
        assert [results.recv() for _ in range(RESULTS_AHEAD)] == [(True, bytes(2**21))] * RESULTS_AHEAD
        tasks.send(None)
        worker.join(10)
        assert worker.exitcode == 0
    finally:
        worker.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipe sizes are a Linux setting")
def test_result_pipes_are_widened_so_a_large_result_moves_in_few_reads():
    import fcntl

    from extractor.parallel.process_pool import PIPE_BYTES, _widen

    reader, writer = multiprocessing.Pipe(duplex=False)
    _widen(reader)
    assert fcntl.fcntl(reader.fileno(), 1032) == PIPE_BYTES  # F_GETPIPE_SZ
    reader.close()
    writer.close()


def test_when_every_file_kills_its_process_the_system_is_blamed(tmp_path):
    for i in range(3):
        make_photo(tmp_path / f"crash_{i}.jpg", (64, 48), seed=i)
    with pytest.raises(WorkerDied, match="the system, not the files"):
        list(decode_stream(CrashingDecoder(ResizeSpec.parse("squash227")), list(discover(tmp_path)), 2, 64))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_default_worker_count_follows_the_cpus_a_container_allows():
    script = "from extractor.parallel.stream import usable_cpus; print(usable_cpus())"
    one_cpu = lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    result = subprocess.run([sys.executable, "-c", script], preexec_fn=one_cpu, capture_output=True, text=True)
    assert result.stdout.strip() == "1", result.stderr


def test_stopping_early_ends_the_worker_processes_without_finishing_their_queue():
    before = set(multiprocessing.active_children())
    results = ordered_map(time.sleep, [0.0] + [1.0] * 20, workers=2, in_flight=8, processes=True)
    next(results)  # 7 one-second items are queued or running now: ~3.5 s per worker
    started = set(multiprocessing.active_children()) - before
    assert len(started) == 2
    start = time.perf_counter()
    results.close()  # e.g. the writer failed: the rest is not decoded
    assert not any(p.is_alive() for p in started)
    assert time.perf_counter() - start < 2.5  # cancelled, not drained
