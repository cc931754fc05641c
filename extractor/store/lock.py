"""The store's use of the directory lock: one writer per dataset (or index) directory, a ``flock`` on the
directory itself, so that no lock file sits among the Parquet parts.

The lock file of the layout before (``.alexfeat.lock``) is honoured once: if a job of an older version holds it,
the lock is refused; otherwise the file is removed.
"""

from __future__ import annotations

import os
from pathlib import Path

from extractor.errors import DatasetError
from extractor.store.layout import LEGACY_LOCK_NAME
from extractor.util.dirlock import DirectoryLock


def dataset_lock(out_dir: str | os.PathLike[str]) -> DirectoryLock:
    """The exclusive write lock of an existing directory, held until released or the ``with`` block ends;
    DatasetError if another job holds it."""
    lock = DirectoryLock(out_dir, None, DatasetError)
    legacy = Path(out_dir) / LEGACY_LOCK_NAME
    if legacy.exists():
        try:
            with DirectoryLock(out_dir, LEGACY_LOCK_NAME, DatasetError):  # an older job still writing: refused
                legacy.unlink()
        except BaseException:
            lock.release()
            raise
    return lock
