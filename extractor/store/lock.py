"""The store's use of the directory lock: one writer per dataset (or index) directory, on ``.alexfeat.lock``."""

from __future__ import annotations

import os

from extractor.errors import DatasetError
from extractor.store.layout import LOCK_NAME
from extractor.util.dirlock import DirectoryLock


def dataset_lock(out_dir: str | os.PathLike[str]) -> DirectoryLock:
    """The exclusive write lock of an existing directory, held until released or the ``with`` block ends;
    DatasetError if another job holds it."""
    return DirectoryLock(out_dir, LOCK_NAME, DatasetError)
