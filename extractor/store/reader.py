"""The one reader of a dataset: every part's metadata checked, only the asked-for columns read."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from extractor.errors import DatasetError
from extractor.network.spec import EmbeddingMeta
from extractor.store.layout import (
    COLUMNS,
    DEFAULT_COLUMNS,
    ERRORS_NAME,
    ERRORS_SCHEMA,
    arrow_schema,
    errors_from_metadata,
    list_parts,
)
from extractor.store.meta import META_KEY, decode_meta
from extractor.store.parquet_io import corrupt_error, read_parquet, read_schema, unreadable_error

log = logging.getLogger(__name__)

NORM_TOLERANCE = 1e-3  # on the squared norm: float32 rounding stays far below, a changed byte rarely does


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

    def _loaded(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None:
            column = {"paths": "path", "labels": "label"}.get(name, name)
            wanted = "embeddings=True" if name == "vectors" else f"{column!r} in columns="
            raise ValueError(f"the dataset's {name} were not read: pass {wanted} to load_dataset")
        return value

    # The columns a caller asked for, typed without ``None``; ValueError if they were not read.
    def get_vectors(self) -> np.ndarray:
        return self._loaded("vectors")

    def get_paths(self) -> list[str]:
        return self._loaded("paths")

    def get_labels(self) -> list[str | None]:
        return self._loaded("labels")

    def get_sha256(self) -> list[bytes]:
        return self._loaded("sha256")

    def get_size(self) -> np.ndarray:
        return self._loaded("size")

    def get_mtime_ns(self) -> np.ndarray:
        return self._loaded("mtime_ns")


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
        raise unreadable_error(path, exc) from exc
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise DatasetError(f"{path} has no alexfeat metadata: it was not written by `alexfeat embed`")
    meta = decode_meta(raw, str(path))
    for expected in arrow_schema(meta):
        index = schema.get_field_index(expected.name)
        if index < 0 or schema.field(index).type != expected.type:
            found = "missing" if index < 0 else str(schema.field(index).type)
            raise DatasetError(f"{path}: column {expected.name!r} should be {expected.type}, found {found}")
    return _Part(path, footer.num_rows, meta)


def require_parts(directory: Path) -> list[_Part]:
    if not directory.is_dir():
        reason = "does not exist" if not directory.exists() else "is not a directory"
        raise DatasetError(f"embeddings directory {directory} {reason}")
    paths = list_parts(directory)
    if not paths:
        note = f" (all files failed: see {ERRORS_NAME})" if (directory / ERRORS_NAME).exists() else ""
        raise DatasetError(
            f"{directory} holds no embeddings{note}: no part-*.parquet files; create them with "
            f"`alexfeat embed IMAGES_DIR -o {directory}`"
        )
    return [_open_part(path) for path in paths]


def agreeing_meta(parts: Sequence[_Part]) -> EmbeddingMeta:
    """The metadata of the newest part, after checking that every part was made with the same model settings."""
    first = parts[0]
    for part in parts[1:]:
        first.meta.check_compatible(
            part.meta,
            f"{first.path.name} and {part.path.name} in {first.path.parent} were made with different model settings",
            hint="Mixing two models' embeddings would give wrong answers; re-embed into a fresh "
            "directory (or with --overwrite)",
        )
    return parts[-1].meta


def read_meta(directory: str | os.PathLike[str]) -> EmbeddingMeta:
    """The dataset's model settings (those of its newest part); DatasetError if no parts, or they disagree."""
    return agreeing_meta(require_parts(Path(directory)))


def _column_list(columns: Iterable[str]) -> list[str]:
    wanted = ["id"] + [c for c in columns if c != "id"]
    unknown = [c for c in wanted if c not in COLUMNS or c == "embedding"]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; choose from {COLUMNS[:-1]} (vectors come with embeddings=True)")
    return list(dict.fromkeys(wanted))


def _fill_vectors(out: np.ndarray, column: pa.ChunkedArray, where: Path) -> None:
    """Copy a fixed_size_list<float32> column into the (n, dim) block ``out`` chunk by chunk, without a row loop,
    checking that every vector is unit-length (or zero: the embedding of an all-black image may be)."""
    row = 0
    for chunk in column.chunks:
        if chunk.null_count:
            raise DatasetError(f"{where}: the embedding column has null rows")
        n = len(chunk)
        block = out[row : row + n]
        block[:] = chunk.flatten().to_numpy(zero_copy_only=False).reshape(n, out.shape[1])
        squared = np.einsum("ij,ij->i", block, block)
        bad = ~((np.abs(squared - 1.0) <= NORM_TOLERANCE) | (squared == 0.0))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise corrupt_error(
                where,
                f"is corrupt: {int(bad.sum())} of its embeddings are not unit-length (row {row + first}: norm "
                f"{float(np.sqrt(squared[first])):.6g})",
            )
        row += n


def load_dataset(
    directory: str | os.PathLike[str],
    columns: Iterable[str] = DEFAULT_COLUMNS,
    embeddings: bool = True,
    expect: EmbeddingMeta | None = None,
    threads: int | None = None,
    parts: Sequence[str] | None = None,
) -> Dataset:
    """Read a dataset: ``columns`` (``id`` always) and, with ``embeddings``, the float32 (N, dim) matrix.

    Only the requested columns are read, of the part files named in ``parts`` when given (a shard of the
    dataset; in write order). Every part's metadata must agree, and with ``expect`` the dataset must be
    compatible with it; a missing, empty, corrupt or mixed dataset raises DatasetError.
    """
    directory = Path(directory)
    wanted = _column_list(columns)
    every = require_parts(directory)
    meta = agreeing_meta(every)
    selected = {part.path.name for part in every} if parts is None else set(parts)
    chosen = [part for part in every if part.path.name in selected]
    if not chosen or len(chosen) != len(selected):
        missing = sorted(selected - {p.path.name for p in chosen})[:3]
        raise DatasetError(f"{directory} lacks the parts {missing}: it changed since they were listed; try again")
    if expect is not None:
        meta.check_compatible(
            expect,
            f"the embeddings in {directory} were made with other settings than the model in use (dataset != expected)",
            hint="Embed the images again with this model, or use the model recorded in the dataset",
        )
    offsets = np.cumsum([0] + [part.num_rows for part in chosen])
    vectors = np.empty((int(offsets[-1]), meta.dim), dtype=np.float32) if embeddings else None
    read_columns = wanted + (["embedding"] if embeddings else [])

    def read(k: int) -> pa.Table:
        part = chosen[k]
        table = read_parquet(part.path, read_columns)
        if table.num_rows != part.num_rows:
            raise DatasetError(f"{part.path} changed while it was being read; try again")
        if vectors is not None:
            _fill_vectors(vectors[offsets[k] : offsets[k + 1]], table.column("embedding"), part.path)
            table = table.drop_columns(["embedding"])
        return table.replace_schema_metadata(None)

    workers = threads or min(len(chosen), os.cpu_count() or 1, 8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        table = pa.concat_tables(list(pool.map(read, range(len(chosen)))))

    def numpy(name: str) -> np.ndarray | None:
        return table.column(name).to_numpy() if name in wanted else None

    def pylist(name: str) -> list | None:
        return table.column(name).to_pylist() if name in wanted else None

    return Dataset(
        meta=meta,
        ids=table.column("id").to_numpy(),
        paths=pylist("path"),
        labels=pylist("label"),
        vectors=vectors,
        sha256=pylist("sha256"),
        size=numpy("size"),
        mtime_ns=numpy("mtime_ns"),
        width=numpy("width"),
        height=numpy("height"),
    )


def read_errors(directory: str | os.PathLike[str]) -> pa.Table:
    """The files a dataset could not embed: a table of ``path``, ``error`` (the kind), ``message``, ``size`` and
    ``mtime_ns`` (of the file when it failed), sorted by path; an empty table when there are none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"embeddings directory {directory} does not exist")
    path = directory / ERRORS_NAME
    if not path.exists():
        return ERRORS_SCHEMA.empty_table()
    try:
        records = errors_from_metadata(read_schema(path))
    except (ValueError, TypeError, pa.ArrowException) as exc:  # JSON or records that do not fit the schema
        raise corrupt_error(path, f"holds unreadable error records ({exc})") from exc
    if records is not None:
        return records
    table = read_parquet(path)  # the layout before: the records as rows
    missing = [name for name in ERRORS_SCHEMA.names if name not in table.column_names]
    if missing:
        raise DatasetError(f"{path} lacks the columns {missing}: it was not written by alexfeat")
    return table.select(ERRORS_SCHEMA.names).replace_schema_metadata(None)


def errors_layout_is_current(directory: Path, schema: pa.Schema) -> bool:
    """Whether ``_errors.parquet`` (if any) is of the current layout with the parts' ``schema`` (else a writer
    rewrites it: records as rows from an older version, or columns of other model settings)."""
    path = directory / ERRORS_NAME
    if not path.exists():
        return True
    found = read_schema(path)
    return errors_from_metadata(found) is not None and found.remove_metadata().equals(schema.remove_metadata())
