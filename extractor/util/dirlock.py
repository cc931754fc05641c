"""One writer per directory: an exclusive, non-blocking ``flock`` on a lock file inside it.

``fcntl.flock`` rather than the ``filelock`` package (see docs/design.md, "Locking"): the kernel releases the lock
when its holder dies, even by SIGKILL, so a killed job never leaves a stale lock; the locked file can still be
read, so a refused job can name the holder's pid; and it needs no extra dependency. What ``filelock`` would add is
Windows, where alexfeat does not run anyway (its decode workers use ``os.nice`` and ``os.pread``).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from extractor.errors import AlexfeatError


class DirectoryLock:
    """Hold ``directory/name`` exclusively from construction until ``release()`` (or the end of a ``with`` block).

    The lock file holds the owner's pid, for the message a second writer gets: ``error`` (an AlexfeatError
    subclass chosen by the caller, e.g. DatasetError) saying the directory is being written by another job.
    Two locks on the same file exclude each other within one process too.
    """

    def __init__(
        self, directory: str | os.PathLike[str], name: str, error: type[AlexfeatError] = AlexfeatError
    ) -> None:
        directory = Path(directory)
        path = directory / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise error(f"cannot write to {directory} ({exc.strerror}); choose a writable output directory") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise error(
                    f"{directory} is being written by another alexfeat job (pid {holder}); wait "
                    "for it to finish or choose another output directory"
                ) from exc
            raise error(f"cannot lock {path} ({exc.strerror})") from exc
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
