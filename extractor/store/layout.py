"""The files and columns of a dataset directory: part names, the errors table, the Arrow schemas.

A dataset is a directory (layout and columns in docs/design.md)::

    part-NNNNN.parquet   embeddings; each written as .part-NNNNN.parquet.tmp, then renamed when complete
    _errors.parquet      files that could not be embedded: no rows, the parts' schema, the records (path, error,
                         message, size, mtime_ns) as JSON in its schema metadata under ``alexfeat_errors``

Nothing else: the one writer's lock is a ``flock`` on the directory itself. Every reader then sees the directory as
the embeddings alone, with no option: pyarrow and pandas skip ``_`` names, and the ones that do not (DuckDB's
``DIR/*.parquet`` glob, Polars on the directory, which also lists sub-folders and refuses any file that is not
Parquet) find an empty table of the same schema. Datasets written before this layout (``_errors.parquet`` with the
records as rows, a ``.alexfeat.lock`` file) are read as they are and moved to it by the next write."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from extractor.network.spec import EmbeddingMeta
from extractor.store.meta import META_KEY, encode_meta

log = logging.getLogger(__name__)

ERRORS_NAME = "_errors.parquet"
ERRORS_KEY = b"alexfeat_errors"  # schema metadata of the errors file: its records as a JSON list of objects
LEGACY_LOCK_NAME = ".alexfeat.lock"  # the lock file of the layout before: removed by the next write
# every column of a part but the embedding, whose width is the dataset's (docs/design.md, the columns table)
ROW_FIELDS = (
    pa.field("id", pa.int64(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("label", pa.string(), nullable=True),
    pa.field("sha256", pa.binary(32), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("mtime_ns", pa.int64(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
)
COLUMNS = (*(f.name for f in ROW_FIELDS), "embedding")
DEFAULT_COLUMNS = ("id", "path", "label")
COMPRESSION = "zstd"
MAX_ROWS_PER_PART = 50_000
PART_EMBEDDING_BYTES = 128 << 20  # caps rows per part for wide embeddings (fc6/fc7: 4096-d)
MAX_PART_SECONDS = 300.0  # buffered rows older than this are written, so a killed job loses little work

PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
TMP_RE = re.compile(r"^\.(part-\d{5,}\.parquet|_errors\.parquet)\.tmp$")


@dataclass(frozen=True)
class ErrorRecord:
    """A file that could not be embedded; its size and mtime let a rerun skip it while it is unchanged."""

    path: str
    error: str
    message: str
    size: int | None = None
    mtime_ns: int | None = None


def arrow_schema(meta: EmbeddingMeta) -> pa.Schema:
    """The Arrow schema of a part, with ``meta`` as JSON under the schema metadata key ``alexfeat``."""
    embedding = pa.field("embedding", pa.list_(pa.float32(), meta.dim), nullable=False)
    return pa.schema([*ROW_FIELDS, embedding], metadata={META_KEY: encode_meta(meta)})


def row_schema(names: Sequence[str]) -> pa.Schema:
    """The schema of some of a part's columns other than the embedding (e.g. an index's lookup of ids)."""
    fields = {f.name: f for f in ROW_FIELDS}
    return pa.schema([fields[name] for name in names])


ERRORS_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=True),
        pa.field("mtime_ns", pa.int64(), nullable=True),
    ]
)


def errors_file_table(errors: pa.Table, schema: pa.Schema) -> pa.Table:
    """The content of ``_errors.parquet``: no rows and the parts' ``schema``, the ``errors`` records in its metadata
    (so readers that glob ``*.parquet`` or list the directory find the same columns and no extra rows)."""
    records = json.dumps(errors.select(ERRORS_SCHEMA.names).to_pylist(), ensure_ascii=False)
    return schema.with_metadata({**(schema.metadata or {}), ERRORS_KEY: records.encode("utf-8")}).empty_table()


def errors_from_metadata(schema: pa.Schema) -> pa.Table | None:
    """The error records stored in an errors file's schema metadata; None for a file of the layout before."""
    raw = (schema.metadata or {}).get(ERRORS_KEY)
    return None if raw is None else pa.Table.from_pylist(json.loads(raw), schema=ERRORS_SCHEMA)


def part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


def part_number(name: str) -> int | None:
    """The number in a complete part's file name (``part-00012.parquet`` is 12); None for any other name."""
    match = PART_RE.match(name)
    return int(match.group(1)) if match else None


def list_parts(directory: str | os.PathLike[str]) -> list[Path]:
    """The complete parts of a dataset directory, in write order (empty when there are none or no directory)."""
    directory = Path(directory)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    numbered = sorted((number, name) for name in names if (number := part_number(name)) is not None)
    return [directory / name for _, name in numbered]


def default_rows_per_part(dim: int) -> int:
    """Rows per part: 50,000, fewer for wide embeddings so a part's vectors stay about 128 MiB at most."""
    return max(1_000, min(MAX_ROWS_PER_PART, PART_EMBEDDING_BYTES // (4 * dim)))
