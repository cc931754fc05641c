"""The generic directory lock: its file name and error type are the caller's; one holder at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from extractor.errors import AlexfeatError, IndexDirError
from extractor.util.dirlock import DirectoryLock

REPO = Path(__file__).resolve().parents[2]


def test_a_second_holder_gets_the_callers_error_naming_the_pid(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path, ".index.lock", IndexDirError):
        assert (tmp_path / ".index.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(IndexDirError, match=rf"being written by another alexfeat job \(pid {os.getpid()}\)"):
            DirectoryLock(tmp_path, ".index.lock", IndexDirError)
        with DirectoryLock(tmp_path, ".other.lock"):  # another name is another lock
            pass
    with DirectoryLock(tmp_path, ".index.lock"):  # released at the end of the block
        pass


def test_release_is_idempotent_and_frees_the_lock(tmp_path: Path) -> None:
    lock = DirectoryLock(tmp_path, "x.lock")
    lock.release()
    lock.release()
    DirectoryLock(tmp_path, "x.lock").release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = (
        "import sys, time\nfrom extractor.util.dirlock import DirectoryLock\n"
        "lock = DirectoryLock(sys.argv[1], 'x.lock')\nprint('ready', flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        with pytest.raises(AlexfeatError, match=f"pid {proc.pid}"):
            DirectoryLock(tmp_path, "x.lock")
    finally:
        proc.kill()
        proc.wait()
    DirectoryLock(tmp_path, "x.lock").release()


def test_a_directory_that_cannot_hold_the_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IndexDirError, match="cannot write to .*choose a writable output directory"):
        DirectoryLock(tmp_path / "missing", "x.lock", IndexDirError)
