"""The Parquet embeddings dataset: metadata, layout, lock, reader and writer.

The names below are the store's public API; each lives in the module named after its job (``EmbeddingMeta``,
the settings a dataset records, is :class:`extractor.network.spec.EmbeddingMeta`).
"""

from extractor.network.spec import COMPAT_FIELDS, FORMAT_VERSION, EmbeddingMeta
from extractor.store.layout import (
    COLUMNS,
    DEFAULT_COLUMNS,
    ERRORS_NAME,
    ERRORS_SCHEMA,
    LEGACY_LOCK_NAME,
    ErrorRecord,
    arrow_schema,
    default_rows_per_part,
    list_parts,
    part_name,
)
from extractor.store.lock import dataset_lock
from extractor.store.meta import META_KEY, path_id, path_ids
from extractor.store.reader import Dataset, load_dataset, read_errors, read_meta
from extractor.store.table import errors_table, to_table, write_errors
from extractor.store.writer import DatasetWriter, open_for_writing

__all__ = [
    "COLUMNS",
    "COMPAT_FIELDS",
    "DEFAULT_COLUMNS",
    "ERRORS_NAME",
    "ERRORS_SCHEMA",
    "FORMAT_VERSION",
    "LEGACY_LOCK_NAME",
    "META_KEY",
    "Dataset",
    "DatasetWriter",
    "EmbeddingMeta",
    "ErrorRecord",
    "arrow_schema",
    "dataset_lock",
    "errors_table",
    "default_rows_per_part",
    "list_parts",
    "load_dataset",
    "open_for_writing",
    "part_name",
    "path_id",
    "path_ids",
    "read_errors",
    "read_meta",
    "to_table",
    "write_errors",
]
