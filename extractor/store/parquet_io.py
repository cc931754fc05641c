"""Atomic Parquet writes and reads that turn I/O and format errors into ``DatasetError``.

Every page is written with a CRC-32 checksum and verified when read, so bytes changed inside a part (a bad disk,
a stray write) are found even when the page still decompresses; parts written before checksums are read as they
are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from extractor.errors import DatasetError
from extractor.util.atomic import atomic_path, fsync_path

log = logging.getLogger(__name__)

_STATS_COLUMNS = ["id", "path", "label", "size", "mtime_ns", "width", "height"]


def write_parquet_atomic(table: pa.Table, target: Path, compression: str) -> None:
    """Write ``table`` to ``.NAME.tmp`` beside ``target``, then rename it into place: readers never see half a file."""
    try:
        with atomic_path(target) as tmp:
            pq.write_table(
                table,
                tmp,
                compression=compression,
                use_dictionary=["label"],
                write_statistics=[c for c in _STATS_COLUMNS if c in table.column_names],
                write_page_checksum=True,
            )
        fsync_path(target.parent)
    except OSError as exc:
        raise DatasetError(f"cannot write {target} ({exc})") from exc


def unreadable_error(path: Path, exc: BaseException) -> DatasetError:
    if isinstance(exc, FileNotFoundError):
        return DatasetError(
            f"{path} disappeared while it was being read (another job is writing the dataset); "
            "try again when it has finished"
        )
    return corrupt_error(path, f"is not a readable Parquet file; it may be truncated or corrupt ({exc})")


def corrupt_error(path: Path, reason: str) -> DatasetError:
    """The error for a damaged part: what is wrong, and that deleting it and embedding again repairs it."""
    return DatasetError(f"{path} {reason}. Delete it to re-embed its images, or embed afresh with --overwrite")


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    try:
        file = pq.ParquetFile(path, page_checksum_verification=True)
        return file.read(columns=list(columns) if columns is not None else None, use_threads=False)
    except (OSError, pa.ArrowException) as exc:
        raise unreadable_error(path, exc) from exc


def read_schema(path: Path) -> pa.Schema:
    """A Parquet file's Arrow schema with its metadata, from the footer alone."""
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise unreadable_error(path, exc) from exc
