"""The Parquet embeddings dataset: metadata, layout, lock, reader and writer.

The names below are the store's public API; each lives in the module named after its job (``EmbeddingMeta``,
the settings a dataset records, is :class:`extractor.network.spec.EmbeddingMeta`).
"""

from extractor.network.spec import COMPAT_FIELDS, FORMAT_VERSION, EmbeddingMeta
from extractor.store.layout import (
    COLUMNS,
    ERRORS_NAME,
    LEGACY_LOCK_NAME,
    ErrorRecord,
    arrow_schema,
    list_parts,
    row_schema,
)
from extractor.store.lock import dataset_lock
from extractor.store.meta import META_KEY, path_id, path_ids
from extractor.store.reader import Dataset, load_dataset, read_errors, read_meta
from extractor.store.table import to_table, write_errors
from extractor.store.writer import DatasetWriter, open_for_writing

__all__ = [
    "COLUMNS",
    "COMPAT_FIELDS",
    "ERRORS_NAME",
    "FORMAT_VERSION",
    "LEGACY_LOCK_NAME",
    "META_KEY",
    "Dataset",
    "DatasetWriter",
    "EmbeddingMeta",
    "ErrorRecord",
    "arrow_schema",
    "dataset_lock",
    "list_parts",
    "load_dataset",
    "open_for_writing",
    "row_schema",
    "path_id",
    "path_ids",
    "read_errors",
    "read_meta",
    "to_table",
    "write_errors",
]
