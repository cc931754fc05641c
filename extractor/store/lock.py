"""The one writer's lock of a directory: an exclusive, non-blocking ``flock`` released by the OS if its holder
dies (so a killed job never leaves a stale lock; ``fcntl`` needs no extra dependency on the POSIX systems
alexfeat runs on)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from extractor.errors import DatasetError
from extractor.store.layout import LOCK_NAME

log = logging.getLogger(__name__)


class DirectoryLock:
    """An exclusive, non-blocking ``flock`` on DIR/.alexfeat.lock; the file holds the owner's pid for messages."""

    def __init__(self, directory: Path) -> None:
        path = directory / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DatasetError(
                f"cannot write to {directory} ({exc.strerror}); choose a writable output directory"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DatasetError(
                    f"{directory} is being written by another alexfeat job (pid {holder}); wait "
                    "for it to finish or choose another output directory"
                ) from exc
            raise DatasetError(f"cannot lock {path} ({exc.strerror})") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


@contextlib.contextmanager
def dataset_lock(out_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the exclusive write lock of an existing dataset directory; DatasetError if another job holds it."""
    lock = DirectoryLock(Path(out_dir))
    try:
        yield
    finally:
        lock.release()
