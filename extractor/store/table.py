"""Rows and error records as Arrow tables of the dataset's schema: what every engine hands to the store.

``to_table`` is the one conversion of columnar rows (numpy arrays, lists or Arrow arrays) into a part's schema;
``write_errors`` is the one writer of ``_errors.parquet``. Both are plain functions on plain data, so a
distributed engine's workers can build tables that the driver commits unchanged.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from extractor.network.spec import EmbeddingMeta
from extractor.store.layout import (
    COLUMNS,
    COMPRESSION,
    ERRORS_NAME,
    ERRORS_SCHEMA,
    ErrorRecord,
    arrow_schema,
    errors_file_table,
)
from extractor.store.meta import path_ids
from extractor.store.parquet_io import write_parquet_atomic
from extractor.util.atomic import fsync_path


def _column_array(name: str, value: Any, field: pa.Field) -> pa.Array | pa.ChunkedArray:
    """One column of rows as the schema's Arrow type."""
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


def to_table(rows: pa.Table | Mapping[str, Any], meta: EmbeddingMeta | pa.Schema) -> pa.Table:
    """Rows as a table of the dataset's schema (``meta``'s, or that schema itself), checked.

    ``rows`` is a Table or a dict of the columns (``id`` optional: derived from ``path``; given, it must be
    ``path_id(path)``). ``embedding`` may be an (n, dim) float32 matrix (it becomes ``fixed_size_list<float32>``,
    never a tensor extension type), ``sha256`` a list of 32-byte digests or an (n, 32) uint8 array. Raises
    ValueError on missing or unknown columns, a wrong shape or type, nulls, NaN, or a repeated path.
    """
    schema = meta if isinstance(meta, pa.Schema) else arrow_schema(meta)
    columns: dict[str, Any] = (
        {name: rows.column(name) for name in rows.column_names} if isinstance(rows, pa.Table) else dict(rows)
    )
    unknown = sorted(set(columns) - set(COLUMNS))
    missing = [name for name in COLUMNS if name != "id" and name not in columns]
    if unknown or missing:
        raise ValueError(
            f"rows must have the columns {COLUMNS[1:]} (id optional); missing {missing}, unknown {unknown}"
        )
    paths = _column_array("path", columns["path"], schema.field("path"))
    ids = path_ids(paths.to_pylist())
    if "id" in columns and not np.array_equal(np.asarray(columns["id"], dtype=np.int64), ids):
        raise ValueError("the id column must be path_id(path) of each row")
    if np.unique(ids).size != ids.size:
        raise ValueError("the rows repeat a path")
    arrays = [pa.array(ids)] + [
        _column_array(f.name, paths if f.name == "path" else columns[f.name], f) for f in list(schema)[1:]
    ]
    try:
        table = pa.Table.from_arrays(arrays, schema=schema)
    except (pa.ArrowInvalid, ValueError) as exc:
        raise ValueError(f"rows do not fit the dataset schema: {exc}") from exc
    nulls = [f.name for f in schema if not f.nullable and table.column(f.name).null_count]
    if nulls:
        raise ValueError(f"columns {nulls} must not hold nulls")
    return table


def errors_table(records: Iterable[ErrorRecord], meta: EmbeddingMeta | pa.Schema) -> pa.Table:
    """Error records, sorted by path, as the content of ``_errors.parquet`` (``layout.errors_file_table``: the
    parts' schema and no rows, the records in its metadata)."""
    schema = meta if isinstance(meta, pa.Schema) else arrow_schema(meta)
    rows = [dataclasses.asdict(r) for r in sorted(records, key=lambda r: r.path)]
    return errors_file_table(pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA), schema)


def write_errors(
    directory: str | os.PathLike[str],
    records: Iterable[ErrorRecord],
    meta: EmbeddingMeta | pa.Schema,
    compression: str = COMPRESSION,
) -> None:
    """Replace ``_errors.parquet`` of a dataset atomically with ``records`` (none: the file is removed).

    The caller holds the dataset's lock (``DatasetWriter`` does)."""
    target = Path(directory) / ERRORS_NAME
    records = list(records)
    if records:
        write_parquet_atomic(errors_table(records, meta), target, compression)
    elif target.exists():
        target.unlink()
        fsync_path(target.parent)
