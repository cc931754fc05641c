"""One writer per directory: an exclusive, non-blocking ``flock`` on the directory itself or on a lock file in it.

``fcntl.flock`` rather than the ``filelock`` package (see docs/design.md, "Locking"): the kernel releases the lock
when its holder dies, even by SIGKILL, so a killed job never leaves a stale lock; the holder can be named (a lock
file holds its pid; for a directory, Linux lists it in ``/proc/locks``); and it needs no extra dependency. What
``filelock`` would add is Windows, where alexfeat does not run anyway (its decode workers use ``os.nice`` and
``os.pread``). Locking the directory itself leaves no file in it, for directories that other programs list (a
Parquet dataset: Polars refuses a directory holding anything but Parquet files).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from extractor.errors import AlexfeatError


class DirectoryLock:
    """Hold ``directory/name`` (``name`` None: the directory itself) exclusively from construction until
    ``release()`` (or the end of a ``with`` block).

    A lock file holds the owner's pid, for the message a second writer gets: ``error`` (an AlexfeatError
    subclass chosen by the caller, e.g. DatasetError) saying the directory is being written by another job.
    Two locks on the same file exclude each other within one process too.
    """

    def __init__(
        self, directory: str | os.PathLike[str], name: str | None, error: type[AlexfeatError] = AlexfeatError
    ) -> None:
        directory = Path(directory)
        path = directory if name is None else directory / name
        writable = os.access(directory, os.W_OK | os.X_OK)
        try:
            if name is None and not writable:
                raise PermissionError(errno.EACCES, "permission denied")
            flags = os.O_RDONLY | os.O_DIRECTORY if name is None else os.O_RDWR | os.O_CREAT
            fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise error(f"cannot write to {directory} ({exc.strerror}); choose a writable output directory") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _flock_holder(fd) if name is None else os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise error(
                    f"{directory} is being written by another alexfeat job (pid {holder or 'unknown'}); wait "
                    "for it to finish or choose another output directory"
                ) from exc
            raise error(f"cannot lock {path} ({exc.strerror})") from exc
        if name is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the lock up (the lock file stays: deleting it would race with a new holder); idempotent."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _flock_holder(fd: int) -> str:
    """The pid holding a flock on ``fd``'s file, from ``/proc/locks`` (Linux); "" where it cannot be told."""
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
    return ""
