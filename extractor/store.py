"""The Parquet embeddings dataset: schema, metadata, atomic parts, the writer's lock and the one reader.

A dataset is a directory (layout and columns in DESIGN.md)::

    part-NNNNN.parquet   embeddings; each written as .part-NNNNN.parquet.tmp, then renamed when complete
    _errors.parquet      files that could not be embedded: path, error, message, size, mtime_ns
    .alexfeat.lock       flock'd by the one job writing the directory (released by the OS if that job dies)

Everything but the parts starts with ``_`` or ``.``, so ``pyarrow.parquet.read_table(DIR)``, DuckDB and Polars
read the directory as the embeddings alone. Every part carries the model settings as JSON schema metadata
(key ``alexfeat``); readers refuse parts that disagree, so two models' embeddings are never mixed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from extractor import __version__
from extractor.atomic import atomic_path
from extractor.errors import DatasetError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
COMPAT_FIELDS = ("arch", "weights_sha256", "layer", "pooling", "input_size", "resize", "dim")
META_KEY = b"alexfeat"
LOCK_NAME = ".alexfeat.lock"
ERRORS_NAME = "_errors.parquet"
COLUMNS = ("id", "path", "label", "sha256", "size", "mtime_ns", "width", "height", "embedding")
DEFAULT_COLUMNS = ("id", "path", "label")
COMPRESSION = "zstd"
MAX_ROWS_PER_PART = 50_000
PART_EMBEDDING_BYTES = 128 << 20  # caps rows per part for wide embeddings (fc6/fc7: 4096-d)
MAX_PART_SECONDS = 300.0  # buffered rows older than this are written, so a killed job loses little work

_PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
_TMP_RE = re.compile(r"^\.(part-\d{5,}\.parquet|_errors\.parquet)\.tmp$")
_ID_MASK = (1 << 63) - 1
# Only small columns get statistics (the id range lets DuckDB/Polars skip parts); the label is dictionary-coded.
_STATS_COLUMNS = ["id", "path", "label", "size", "mtime_ns", "width", "height"]


@dataclass(frozen=True)
class EmbeddingMeta:
    """The settings that produced a dataset's embeddings (schema metadata ``alexfeat``, JSON)."""

    arch: str
    weights_source: str
    weights_sha256: str
    layer: str
    pooling: str | None
    input_size: int
    resize: str
    dim: int
    root: str
    package_version: str = __version__
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in ("dim", "input_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "embedding metadata") -> EmbeddingMeta:
        """Parse metadata JSON; anything malformed or from a newer format raises DatasetError naming ``where``."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{where}: alexfeat metadata is not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("format_version"), int):
            raise DatasetError(f"{where}: alexfeat metadata has no format_version")
        if data["format_version"] > FORMAT_VERSION:
            raise DatasetError(f"{where} was written by a newer alexfeat (format {data['format_version']}; this "
                               f"version reads format {FORMAT_VERSION}); upgrade alexfeat to read it")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in data]
        if missing:
            raise DatasetError(f"{where}: alexfeat metadata lacks {', '.join(missing)}")
        try:
            return cls(**{name: data[name] for name in names})
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: alexfeat metadata is invalid ({exc})") from exc

    def differences(self, other: EmbeddingMeta) -> list[str]:
        """``"field: mine != other's"`` for each compatibility field that differs (paths and versions never count)."""
        return [f"{name}: {getattr(self, name)} != {getattr(other, name)}"
                for name in COMPAT_FIELDS if getattr(self, name) != getattr(other, name)]

    def check_compatible(self, other: EmbeddingMeta, what: str, hint: str = "") -> None:
        """Raise DatasetError ``"{what}: <differences>. {hint}"`` unless ``other`` has the same compatibility fields."""
        diffs = self.differences(other)
        if diffs:
            raise DatasetError(f"{what}: {'; '.join(diffs)}." + (f" {hint}" if hint else ""))


@dataclass(frozen=True)
class ErrorRecord:
    """A file that could not be embedded; its size and mtime let a rerun skip it while it is unchanged."""

    path: str
    error: str
    message: str
    size: int | None = None
    mtime_ns: int | None = None


@dataclass
class Dataset:
    """Columns of an embeddings dataset, row-aligned; columns that were not asked for are None."""

    meta: EmbeddingMeta
    ids: np.ndarray  # int64
    paths: list[str] | None = None
    labels: list[str | None] | None = None
    vectors: np.ndarray | None = None  # float32 (N, dim), C-contiguous
    sha256: list[bytes] | None = None
    size: np.ndarray | None = None
    mtime_ns: np.ndarray | None = None
    width: np.ndarray | None = None
    height: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


def path_id(rel_path: str) -> int:
    """Stable 63-bit id of a relative path: the first 8 bytes of its UTF-8 sha256, big-endian, top bit cleared."""
    return int.from_bytes(hashlib.sha256(rel_path.encode("utf-8")).digest()[:8], "big") & _ID_MASK


def path_ids(rel_paths: Iterable[str]) -> np.ndarray:
    """``path_id`` of many paths, as an int64 array."""
    return np.fromiter((path_id(p) for p in rel_paths), dtype=np.int64)


def arrow_schema(meta: EmbeddingMeta) -> pa.Schema:
    """The Arrow schema of a part, with ``meta`` as JSON under the schema metadata key ``alexfeat``."""
    return pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=True),
        pa.field("sha256", pa.binary(32), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_ns", pa.int64(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), meta.dim), nullable=False),
    ], metadata={META_KEY: meta.to_json().encode("utf-8")})


ERRORS_SCHEMA = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("error", pa.string(), nullable=False),
    pa.field("message", pa.string(), nullable=False),
    pa.field("size", pa.int64(), nullable=True),
    pa.field("mtime_ns", pa.int64(), nullable=True),
])


def part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


def list_parts(directory: str | os.PathLike[str]) -> list[Path]:
    """The complete parts of a dataset directory, in write order (empty when there are none or no directory)."""
    directory = Path(directory)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    numbered = sorted((int(m.group(1)), name) for name in names if (m := _PART_RE.match(name)))
    return [directory / name for _, name in numbered]


def default_rows_per_part(dim: int) -> int:
    """Rows per part: 50,000, fewer for wide embeddings so a part's vectors stay about 128 MiB at most."""
    return max(1_000, min(MAX_ROWS_PER_PART, PART_EMBEDDING_BYTES // (4 * dim)))


# ---------------------------------------------------------------------------------------------------- lock


class _Lock:
    """An exclusive, non-blocking ``flock`` on DIR/.alexfeat.lock; the file holds the owner's pid for messages."""

    def __init__(self, directory: Path) -> None:
        path = directory / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DatasetError(f"cannot write to {directory} ({exc.strerror}); choose a writable output "
                               "directory") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DatasetError(f"{directory} is being written by another alexfeat job (pid {holder}); wait "
                                   "for it to finish or choose another output directory") from exc
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
    lock = _Lock(Path(out_dir))
    try:
        yield
    finally:
        lock.release()


# -------------------------------------------------------------------------------------------- file helpers


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_parquet_atomic(table: pa.Table, target: Path, compression: str) -> None:
    """Write ``table`` to ``.NAME.tmp`` beside ``target``, then rename it into place: readers never see half a file."""
    try:
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp, compression=compression, use_dictionary=["label"],
                           write_statistics=[c for c in _STATS_COLUMNS if c in table.column_names])
        _fsync_dir(target.parent)
    except OSError as exc:
        raise DatasetError(f"cannot write {target} ({exc})") from exc


def _unreadable(path: Path, exc: BaseException) -> DatasetError:
    if isinstance(exc, FileNotFoundError):
        return DatasetError(f"{path} disappeared while it was being read (another job is writing the dataset); "
                            "try again when it has finished")
    return DatasetError(f"{path} is not a readable Parquet file; it may be truncated or corrupt ({exc}). "
                        "Delete it to re-embed its images, or embed afresh with --overwrite")


def _read_parquet(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    try:
        return pq.ParquetFile(path).read(columns=list(columns) if columns is not None else None, use_threads=False)
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(path, exc) from exc


# ------------------------------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class _Part:
    path: Path
    num_rows: int
    meta: EmbeddingMeta


def _open_part(path: Path) -> _Part:
    """Read a part's footer: row count and metadata, checking that it has the alexfeat columns."""
    try:
        footer = pq.read_metadata(path)
        schema = footer.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(path, exc) from exc
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise DatasetError(f"{path} has no alexfeat metadata: it was not written by `alexfeat embed`")
    meta = EmbeddingMeta.from_json(raw, where=str(path))
    for expected in arrow_schema(meta):
        index = schema.get_field_index(expected.name)
        if index < 0 or schema.field(index).type != expected.type:
            found = "missing" if index < 0 else str(schema.field(index).type)
            raise DatasetError(f"{path}: column {expected.name!r} should be {expected.type}, found {found}")
    return _Part(path, footer.num_rows, meta)


def _require_parts(directory: Path) -> list[_Part]:
    if not directory.is_dir():
        reason = "does not exist" if not directory.exists() else "is not a directory"
        raise DatasetError(f"embeddings directory {directory} {reason}")
    paths = list_parts(directory)
    if not paths:
        note = f" (all files failed: see {ERRORS_NAME})" if (directory / ERRORS_NAME).exists() else ""
        raise DatasetError(f"{directory} holds no embeddings{note}: no part-*.parquet files; create them with "
                           f"`alexfeat embed IMAGES_DIR -o {directory}`")
    return [_open_part(path) for path in paths]


def _agreeing_meta(parts: Sequence[_Part]) -> EmbeddingMeta:
    """The metadata of the newest part, after checking that every part was made with the same model settings."""
    first = parts[0]
    for part in parts[1:]:
        first.meta.check_compatible(
            part.meta, f"{first.path.name} and {part.path.name} in {first.path.parent} were made with different "
            "model settings", hint="Mixing two models' embeddings would give wrong answers; re-embed into a fresh "
            "directory (or with --overwrite)")
    return parts[-1].meta


def read_meta(directory: str | os.PathLike[str]) -> EmbeddingMeta:
    """The dataset's model settings (those of its newest part); DatasetError if no parts, or they disagree."""
    return _agreeing_meta(_require_parts(Path(directory)))


def _column_list(columns: Iterable[str]) -> list[str]:
    wanted = ["id"] + [c for c in columns if c != "id"]
    unknown = [c for c in wanted if c not in COLUMNS or c == "embedding"]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; choose from {COLUMNS[:-1]} (vectors come with embeddings=True)")
    return list(dict.fromkeys(wanted))


def _fill_vectors(out: np.ndarray, column: pa.ChunkedArray, where: Path) -> None:
    """Copy a fixed_size_list<float32> column into the (n, dim) block ``out`` chunk by chunk, without a row loop."""
    row = 0
    for chunk in column.chunks:
        if chunk.null_count:
            raise DatasetError(f"{where}: the embedding column has null rows")
        n = len(chunk)
        out[row:row + n] = chunk.flatten().to_numpy(zero_copy_only=False).reshape(n, out.shape[1])
        row += n


def load_dataset(directory: str | os.PathLike[str], columns: Iterable[str] = DEFAULT_COLUMNS,
                 embeddings: bool = True, expect: EmbeddingMeta | None = None,
                 threads: int | None = None) -> Dataset:
    """Read a dataset: ``columns`` (``id`` always) and, with ``embeddings``, the float32 (N, dim) matrix.

    Only the requested columns are read. Every part's metadata must agree, and with ``expect`` the dataset must
    be compatible with it; a missing, empty, corrupt or mixed dataset raises DatasetError.
    """
    directory = Path(directory)
    wanted = _column_list(columns)
    parts = _require_parts(directory)
    meta = _agreeing_meta(parts)
    if expect is not None:
        meta.check_compatible(expect, f"the embeddings in {directory} were made with other settings than the model "
                              "in use (dataset != expected)", hint="Embed the images again with this model, or use "
                              "the model recorded in the dataset")
    offsets = np.cumsum([0] + [part.num_rows for part in parts])
    vectors = np.empty((int(offsets[-1]), meta.dim), dtype=np.float32) if embeddings else None
    read_columns = wanted + (["embedding"] if embeddings else [])

    def read(k: int) -> pa.Table:
        part = parts[k]
        table = _read_parquet(part.path, read_columns)
        if table.num_rows != part.num_rows:
            raise DatasetError(f"{part.path} changed while it was being read; try again")
        if vectors is not None:
            _fill_vectors(vectors[offsets[k]:offsets[k + 1]], table.column("embedding"), part.path)
            table = table.drop_columns(["embedding"])
        return table.replace_schema_metadata(None)

    workers = threads or min(len(parts), os.cpu_count() or 1, 8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        table = pa.concat_tables(list(pool.map(read, range(len(parts)))))

    def numpy(name: str) -> np.ndarray | None:
        return table.column(name).to_numpy() if name in wanted else None

    def pylist(name: str) -> list | None:
        return table.column(name).to_pylist() if name in wanted else None

    return Dataset(meta=meta, ids=table.column("id").to_numpy(), paths=pylist("path"), labels=pylist("label"),
                   vectors=vectors, sha256=pylist("sha256"), size=numpy("size"), mtime_ns=numpy("mtime_ns"),
                   width=numpy("width"), height=numpy("height"))


def read_errors(directory: str | os.PathLike[str]) -> pa.Table:
    """The dataset's ``_errors.parquet`` (path, error, message, size, mtime_ns); an empty table when there is none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"embeddings directory {directory} does not exist")
    path = directory / ERRORS_NAME
    if not path.exists():
        return ERRORS_SCHEMA.empty_table()
    table = _read_parquet(path)
    missing = [name for name in ERRORS_SCHEMA.names if name not in table.column_names]
    if missing:
        raise DatasetError(f"{path} lacks the columns {missing}: it was not written by alexfeat")
    return table.select(ERRORS_SCHEMA.names).replace_schema_metadata(None)


# ------------------------------------------------------------------------------------------------- writer


def _refuse_foreign(directory: Path) -> None:
    """DatasetError unless ``directory`` holds only parts and hidden or ``_`` names (which Parquet readers skip)."""
    foreign = sorted(name for name in os.listdir(directory)
                     if not (_PART_RE.match(name) or name.startswith((".", "_"))))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise DatasetError(f"{directory} is not empty and is not an alexfeat embeddings directory (it holds "
                           f"{shown}); choose a new or empty output directory")


def _column_array(name: str, value: Any, field: pa.Field) -> pa.Array | pa.ChunkedArray:
    """One column of rows given to ``DatasetWriter.add`` as the schema's Arrow type."""
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        return value if value.type == field.type else value.cast(field.type)
    if name == "embedding":
        matrix = np.ascontiguousarray(value, dtype=np.float32)
        dim = field.type.list_size
        if matrix.ndim != 2 or matrix.shape[1] != dim:
            raise ValueError(f"embedding must be an (n, {dim}) matrix, got shape {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise ValueError("embedding holds NaN or infinite values")
        return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dim)
    if name == "sha256" and isinstance(value, np.ndarray) and value.dtype == np.uint8:
        digests = np.ascontiguousarray(value)
        if digests.ndim != 2 or digests.shape[1] != 32:
            raise ValueError(f"sha256 as an array must be (n, 32) uint8, got shape {digests.shape}")
        return pa.FixedSizeBinaryArray.from_buffers(field.type, len(digests), [None, pa.py_buffer(digests)])
    return pa.array(value, type=field.type)


class DatasetWriter:
    """The one writer of a dataset directory: holds its lock, appends atomic parts, rewrites parts to drop rows.

    Rows are buffered and written ``rows_per_part`` at a time (and whenever the oldest buffered row is
    ``max_part_seconds`` old); a crash at any point leaves only complete parts. ``close()`` (or leaving the
    ``with`` block) writes what is buffered and releases the lock.
    """

    def __init__(self, out_dir: str | os.PathLike[str], meta: EmbeddingMeta, *, overwrite: bool = False,
                 rows_per_part: int | None = None, compression: str = COMPRESSION,
                 max_part_seconds: float | None = MAX_PART_SECONDS) -> None:
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
            raise DatasetError(f"cannot create output directory {self.out_dir} ({exc.strerror}); choose a "
                               "writable directory") from exc
        _refuse_foreign(self.out_dir)  # before the lock file is created: a foreign directory is left untouched
        self._lock: _Lock | None = _Lock(self.out_dir)
        try:
            self._open(overwrite)
        except BaseException:
            self._lock.release()
            self._lock = None
            raise

    # -- opening

    def _open(self, overwrite: bool) -> None:
        for name in os.listdir(self.out_dir):
            if _TMP_RE.match(name) or (overwrite and (_PART_RE.match(name) or name == ERRORS_NAME)):
                (self.out_dir / name).unlink()  # .tmp files are from killed jobs: never complete
        parts = list_parts(self.out_dir)
        if parts:
            existing = read_meta(self.out_dir)
            existing.check_compatible(
                self.meta, f"{self.out_dir} already holds embeddings made with other settings (existing != new)",
                hint="Use --overwrite to replace them, or choose another output directory")
            for path in parts:
                self._part_ids[path.name] = _read_parquet(path, ["id"]).column("id").to_numpy()
            self._known = np.unique(np.concatenate(list(self._part_ids.values())))
            self._next_part = int(_PART_RE.match(parts[-1].name).group(1)) + 1
        else:
            self._next_part = 0
        errors = read_errors(self.out_dir).to_pylist()
        self._set_errors(ErrorRecord(**row) for row in errors)
        self._errors_dirty = self._forget_embedded_errors(self._known) > 0

    # -- public API

    def add(self, rows: pa.Table | Mapping[str, Any]) -> None:
        """Append rows: a Table or a dict of the schema's columns (``id`` optional: it is derived from ``path``).

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
        columns: dict[str, Any] = ({name: rows.column(name) for name in rows.column_names}
                                   if isinstance(rows, pa.Table) else dict(rows))
        unknown = sorted(set(columns) - set(COLUMNS))
        missing = [name for name in COLUMNS if name != "id" and name not in columns]
        if unknown or missing:
            raise ValueError(f"rows must have the columns {COLUMNS[1:]} (id optional); "
                             f"missing {missing}, unknown {unknown}")
        paths = _column_array("path", columns["path"], self.schema.field("path"))
        path_list = paths.to_pylist()
        ids = path_ids(path_list)
        if "id" in columns and not np.array_equal(np.asarray(columns["id"], dtype=np.int64), ids):
            raise ValueError("the id column must be path_id(path) of each row")
        arrays = [pa.array(ids)] + [_column_array(f.name, paths if f.name == "path" else columns[f.name], f)
                                    for f in list(self.schema)[1:]]
        try:
            table = pa.Table.from_arrays(arrays, schema=self.schema)
        except (pa.ArrowInvalid, ValueError) as exc:
            raise ValueError(f"rows do not fit the dataset schema: {exc}") from exc
        nulls = [f.name for f in self.schema if not f.nullable and table.column(f.name).null_count]
        if nulls:
            raise ValueError(f"columns {nulls} must not hold nulls")
        self._check_new_ids(ids, path_list)
        return table

    def _check_new_ids(self, ids: np.ndarray, paths: list[str]) -> None:
        batch = ids.tolist()
        if len(set(batch)) != len(batch):
            raise ValueError("the rows repeat a path")
        pos = np.minimum(np.searchsorted(self._known, ids), max(len(self._known) - 1, 0))
        on_disk = (self._known[pos] == ids) if len(self._known) else np.zeros(len(ids), dtype=bool)
        for i, value in enumerate(batch):
            if on_disk[i] or value in self._buffer_ids:
                raise DatasetError(f"{paths[i]!r} is already in {self.out_dir} (id {value}); its old row must be "
                                   "dropped before it is embedded again, so ids stay unique")
        self._buffer_ids.update(batch)

    def _flush_if_old(self) -> None:
        if (self.max_part_seconds is not None and self._buffer_since is not None
                and time.monotonic() - self._buffer_since >= self.max_part_seconds):
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
        _write_parquet_atomic(table, path, self.compression)
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
        table = transform(_read_parquet(path))  # keeps the part's own schema metadata
        if table.num_rows:
            _write_parquet_atomic(table, path, self.compression)
            self._part_ids[name] = table.column("id").to_numpy()
        else:
            path.unlink()
            _fsync_dir(self.out_dir)
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
        target = self.out_dir / ERRORS_NAME
        if self._errors:
            rows = [dataclasses.asdict(self._errors[p]) for p in sorted(self._errors)]
            table = pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA.with_metadata(self.schema.metadata))
            _write_parquet_atomic(table, target, self.compression)
        elif target.exists():
            target.unlink()
            _fsync_dir(self.out_dir)
        self._errors_dirty = False


def open_for_writing(out_dir: str | os.PathLike[str], meta: EmbeddingMeta, overwrite: bool = False,
                     **options: Any) -> DatasetWriter:
    """Create or reopen a dataset for writing (taking its lock); ``options`` go to ``DatasetWriter``.

    An existing dataset made with other settings is refused (unless ``overwrite``, which deletes its parts and
    errors first); so is a non-empty directory that is not a dataset, a directory another job is writing, and
    an output that cannot be written.
    """
    return DatasetWriter(out_dir, meta, overwrite=overwrite, **options)
