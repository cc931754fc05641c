"""The one writer's lock of a directory: an exclusive, non-blocking ``flock`` on the directory itself, released by
the OS if its holder dies (so a killed job never leaves a stale lock, and the directory holds no lock file that a
Parquet reader listing it would trip on; ``fcntl`` needs no extra dependency on the POSIX systems alexfeat runs on).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from extractor.errors import DatasetError
from extractor.store.layout import LEGACY_LOCK_NAME

log = logging.getLogger(__name__)


def _holder(fd: int) -> str:
    """The pid holding the flock on ``fd``'s file, from ``/proc/locks`` (Linux); "unknown" elsewhere."""
    st = os.fstat(fd)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == where:
                    return fields[4]
    except OSError:
        pass
    return "unknown"


def _flock(fd: int, what: Path, directory: Path) -> None:
    """Take the exclusive lock on ``fd`` or close it and raise DatasetError."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder(fd) if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else ""
        os.close(fd)
        if holder:
            raise DatasetError(
                f"{directory} is being written by another alexfeat job (pid {holder}); wait for it to finish or "
                "choose another output directory"
            ) from exc
        raise DatasetError(f"cannot lock {what} ({exc.strerror})") from exc


class DirectoryLock:
    """An exclusive, non-blocking ``flock`` on the directory ``directory`` (opened read-only, no file created).

    The lock file of the layout before (``.alexfeat.lock``) is honoured once: if a job of an older version holds
    it, the lock is refused; otherwise the file is removed.
    """

    def __init__(self, directory: Path) -> None:
        if not os.access(directory, os.W_OK | os.X_OK):
            raise DatasetError(f"cannot write to {directory} (permission denied); choose a writable output directory")
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise DatasetError(f"cannot open {directory} ({exc.strerror}); choose a writable output directory") from exc
        _flock(fd, directory, directory)
        self._fd: int | None = fd
        try:
            self._retire_legacy_lock(directory)
        except BaseException:
            self.release()
            raise

    @staticmethod
    def _retire_legacy_lock(directory: Path) -> None:
        legacy = directory / LEGACY_LOCK_NAME
        try:
            fd = os.open(legacy, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise DatasetError(f"cannot open {legacy} ({exc.strerror})") from exc
        _flock(fd, legacy, directory)
        try:
            legacy.unlink()
        except OSError as exc:
            raise DatasetError(f"cannot remove the old lock file {legacy} ({exc.strerror})") from exc
        finally:
            os.close(fd)

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
