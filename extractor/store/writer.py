"""The one writer of a dataset: atomic parts, row drops by part rewrite, the errors table."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from extractor.errors import DatasetError
from extractor.network.spec import EmbeddingMeta
from extractor.store.layout import (
    COMPRESSION,
    ERRORS_NAME,
    MAX_PART_SECONDS,
    PART_RE,
    TMP_RE,
    ErrorRecord,
    arrow_schema,
    default_rows_per_part,
    list_parts,
    part_name,
    part_number,
)
from extractor.store.lock import dataset_lock
from extractor.store.meta import path_id
from extractor.store.parquet_io import read_parquet, write_parquet_atomic
from extractor.store.reader import errors_layout_is_current, read_errors, read_meta
from extractor.store.table import to_table, write_errors
from extractor.util.atomic import fsync_path
from extractor.util.dirlock import DirectoryLock

log = logging.getLogger(__name__)


def _refuse_foreign(directory: Path) -> None:
    """DatasetError unless ``directory`` holds only parts and hidden or ``_`` names (which Parquet readers skip)."""
    foreign = sorted(name for name in os.listdir(directory) if not (PART_RE.match(name) or name.startswith((".", "_"))))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise DatasetError(
            f"{directory} is not empty and is not an alexfeat embeddings directory (it holds "
            f"{shown}); choose a new or empty output directory"
        )


class DatasetWriter:
    """The one writer of a dataset directory: holds its lock, appends atomic parts, rewrites parts to drop rows.

    Rows are buffered and written ``rows_per_part`` at a time (and whenever the oldest buffered row is
    ``max_part_seconds`` old); a crash at any point leaves only complete parts. ``close()`` (or leaving the
    ``with`` block) writes what is buffered and releases the lock.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        meta: EmbeddingMeta,
        *,
        overwrite: bool = False,
        rows_per_part: int | None = None,
        compression: str = COMPRESSION,
        max_part_seconds: float | None = MAX_PART_SECONDS,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.meta = meta
        self.schema = arrow_schema(meta)
        self.rows_per_part = rows_per_part or default_rows_per_part(meta.dim)
        self.compression = compression
        self.max_part_seconds = max_part_seconds
        self.parts_written = 0
        self.rows_written = 0
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._buffer_since: float | None = None
        self._buffer_ids: set[int] = set()
        self._part_ids: dict[str, np.ndarray] = {}  # ids of each part on disk, in file order
        self._known = np.empty(0, dtype=np.int64)  # sorted ids of all rows on disk
        self._errors: dict[str, ErrorRecord] = {}
        self._error_ids: dict[int, str] = {}
        self._errors_dirty = False
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise DatasetError(f"output {self.out_dir} exists and is not a directory; choose a directory")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatasetError(
                f"cannot create output directory {self.out_dir} ({exc.strerror}); choose a writable directory"
            ) from exc
        _refuse_foreign(self.out_dir)  # before the lock (which removes an old lock file): a foreign dir stays as it is
        self._lock: DirectoryLock | None = dataset_lock(self.out_dir)
        try:
            self._open(overwrite)
        except BaseException:
            self._lock.release()
            self._lock = None
            raise

    # -- opening

    def _open(self, overwrite: bool) -> None:
        for name in os.listdir(self.out_dir):
            if TMP_RE.match(name) or (overwrite and (PART_RE.match(name) or name == ERRORS_NAME)):
                (self.out_dir / name).unlink()  # .tmp files are from killed jobs: never complete
        parts = list_parts(self.out_dir)
        if parts:
            existing = read_meta(self.out_dir)
            existing.check_compatible(
                self.meta,
                f"{self.out_dir} already holds embeddings made with other settings (existing != new)",
                hint="Use --overwrite to replace them, or choose another output directory",
            )
            if existing.root and self.meta.root and existing.root != self.meta.root:  # paths are relative to it
                log.warning(
                    "%s holds images of %s; this run reads %s, which the dataset will record as its images folder "
                    "(thumbnails and dedup read from it). Right if the images moved; for another collection, stop "
                    "(Ctrl-C) and give another output directory",
                    self.out_dir,
                    existing.root,
                    self.meta.root,
                )
            for path in parts:
                self._part_ids[path.name] = read_parquet(path, ["id"]).column("id").to_numpy()
            self._known = np.unique(np.concatenate(list(self._part_ids.values())))
            last = part_number(parts[-1].name)
            assert last is not None  # list_parts lists part names only
            self._next_part = last + 1
        else:
            self._next_part = 0
        errors = read_errors(self.out_dir).to_pylist()
        self._set_errors(ErrorRecord(**row) for row in errors)
        self._errors_dirty = self._forget_embedded_errors(self._known) > 0
        self._errors_dirty |= bool(self._errors) and not errors_layout_is_current(self.out_dir, self.schema)

    # -- public API

    def add(self, rows: pa.Table | Mapping[str, Any]) -> None:
        """Append rows: a Table or a dict of the schema's columns. ``id`` is derived from ``path`` here (the one
        place paths are hashed); a given ``id`` column is checked against it.

        ``embedding`` may be an (n, dim) float32 matrix, ``sha256`` a list of 32-byte digests or an (n, 32) uint8
        array. An id already in the dataset is refused: drop the old row first (``drop_ids``).
        """
        table = self._to_table(rows)
        if table.num_rows == 0:
            return
        self._buffer.append(table)
        self._buffered += table.num_rows
        if self._buffer_since is None:
            self._buffer_since = time.monotonic()
        if self._buffered >= self.rows_per_part:
            self._write_buffer(final=False)
        self._flush_if_old()

    def add_errors(self, records: Iterable[ErrorRecord]) -> None:
        """Record files that could not be embedded (a newer record of a path replaces the older one)."""
        self._set_errors(records)
        self._errors_dirty = True
        self._flush_if_old()

    def drop_errors(self, paths: Iterable[str]) -> int:
        """Forget the error records of ``paths`` (files that vanished); returns how many were dropped."""
        dropped = 0
        for path in paths:
            if self._errors.pop(path, None) is not None:
                self._error_ids.pop(path_id(path), None)
                dropped += 1
        self._errors_dirty |= dropped > 0
        return dropped

    def drop_ids(self, ids: Iterable[int]) -> int:
        """Remove rows by id, rewriting each affected part atomically (deleting parts left empty); returns count."""
        drop = np.unique(np.fromiter(ids, dtype=np.int64))
        if drop.size == 0:
            return 0
        removed = 0
        if self._buffer:
            kept = [t.filter(pa.array(~np.isin(t.column("id").to_numpy(), drop))) for t in self._buffer]
            removed += self._buffered - sum(t.num_rows for t in kept)
            self._buffer = [t for t in kept if t.num_rows]
            self._buffered = sum(t.num_rows for t in self._buffer)
            self._buffer_ids.difference_update(drop.tolist())
        for name, part_ids in list(self._part_ids.items()):
            hits = int(np.isin(part_ids, drop).sum())
            if hits:
                self._rewrite_part(name, lambda t: t.filter(pa.array(~np.isin(t.column("id").to_numpy(), drop))))
                removed += hits
        self._known = np.setdiff1d(self._known, drop, assume_unique=True)
        return removed

    def update_file_stats(self, stats: Mapping[int, tuple[int, int]]) -> int:
        """Set ``size`` and ``mtime_ns`` of rows on disk (id -> (size, mtime_ns)), e.g. of touched but unchanged
        files, rewriting affected parts atomically; returns how many rows were updated."""
        if not stats:
            return 0
        keys = np.array(sorted(stats), dtype=np.int64)
        sizes = np.array([stats[k][0] for k in keys.tolist()], dtype=np.int64)
        mtimes = np.array([stats[k][1] for k in keys.tolist()], dtype=np.int64)

        def update(table: pa.Table) -> pa.Table:
            ids = table.column("id").to_numpy()
            pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
            hit = keys[pos] == ids
            for name, values in (("size", sizes), ("mtime_ns", mtimes)):
                column = table.column(name).to_numpy().copy()
                column[hit] = values[pos[hit]]
                index = table.schema.get_field_index(name)
                table = table.set_column(index, table.schema.field(index), pa.array(column))
            return table

        updated = 0
        for name, part_ids in list(self._part_ids.items()):
            hits = int(np.isin(part_ids, keys).sum())
            if hits:
                self._rewrite_part(name, update)
                updated += hits
        return updated

    def flush(self) -> None:
        """Write all buffered rows as a part, and the error records if they changed."""
        self._write_buffer(final=True)
        self._write_errors()

    def close(self) -> None:
        """Flush and release the lock (idempotent)."""
        if self._lock is None:
            return
        try:
            self.flush()
        finally:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # buffered rows are finished work: keep them even when the job stops on an exception

    # -- internals

    def _to_table(self, rows: pa.Table | Mapping[str, Any]) -> pa.Table:
        table = to_table(rows, self.schema)
        self._check_new_ids(table.column("id").to_numpy(), table.column("path").to_pylist())
        return table

    def _check_new_ids(self, ids: np.ndarray, paths: list[str]) -> None:
        batch = ids.tolist()
        pos = np.minimum(np.searchsorted(self._known, ids), max(len(self._known) - 1, 0))
        on_disk = (self._known[pos] == ids) if len(self._known) else np.zeros(len(ids), dtype=bool)
        for i, value in enumerate(batch):
            if on_disk[i] or value in self._buffer_ids:
                raise DatasetError(
                    f"{paths[i]!r} is already in {self.out_dir} (id {value}); its old row must be "
                    "dropped before it is embedded again, so ids stay unique"
                )
        self._buffer_ids.update(batch)

    def _flush_if_old(self) -> None:
        if (
            self.max_part_seconds is not None
            and self._buffer_since is not None
            and time.monotonic() - self._buffer_since >= self.max_part_seconds
        ):
            self.flush()

    def _write_buffer(self, final: bool) -> None:
        if not self._buffer:
            return
        table = pa.concat_tables(self._buffer)
        while table.num_rows >= self.rows_per_part or (final and table.num_rows):
            self._write_part(table.slice(0, self.rows_per_part))
            table = table.slice(self.rows_per_part)
        self._buffer = [table] if table.num_rows else []
        self._buffered = table.num_rows
        self._buffer_since = time.monotonic() if table.num_rows else None
        self._write_errors()

    def _write_part(self, table: pa.Table) -> None:
        path = self.out_dir / part_name(self._next_part)
        write_parquet_atomic(table, path, self.compression)
        self._next_part += 1
        ids = table.column("id").to_numpy()
        self._part_ids[path.name] = ids
        self._known = np.union1d(self._known, ids)
        self._buffer_ids.difference_update(ids.tolist())
        self.parts_written += 1
        self.rows_written += table.num_rows
        self._errors_dirty |= self._forget_embedded_errors(ids) > 0

    def _rewrite_part(self, name: str, transform: Callable[[pa.Table], pa.Table]) -> None:
        path = self.out_dir / name
        table = transform(read_parquet(path))  # keeps the part's own schema metadata
        if table.num_rows:
            write_parquet_atomic(table, path, self.compression)
            self._part_ids[name] = table.column("id").to_numpy()
        else:
            path.unlink()
            fsync_path(self.out_dir)
            del self._part_ids[name]

    def _set_errors(self, records: Iterable[ErrorRecord]) -> None:
        for record in records:
            self._errors[record.path] = record
            self._error_ids[path_id(record.path)] = record.path

    def _forget_embedded_errors(self, ids: np.ndarray) -> int:
        """Drop the error records of paths that now have a row; returns how many."""
        if not self._error_ids:
            return 0
        embedded = [i for i in ids.tolist() if i in self._error_ids]
        for i in embedded:
            del self._errors[self._error_ids.pop(i)]
        return len(embedded)

    def _write_errors(self) -> None:
        if not self._errors_dirty:
            return
        write_errors(self.out_dir, self._errors.values(), self.schema, self.compression)
        self._errors_dirty = False


def open_for_writing(
    out_dir: str | os.PathLike[str], meta: EmbeddingMeta, overwrite: bool = False, **options: Any
) -> DatasetWriter:
    """Create or reopen a dataset for writing (taking its lock); ``options`` go to ``DatasetWriter``.

    An existing dataset made with other settings is refused (unless ``overwrite``, which deletes its parts and
    errors first); so is a non-empty directory that is not a dataset, a directory another job is writing, and
    an output that cannot be written.
    """
    return DatasetWriter(out_dir, meta, overwrite=overwrite, **options)
