"""The embed job's stages after decoding, shared by every engine: a decoded, embedded batch (columns from
:mod:`extractor.images.batches`) → dataset rows and error records → the writer.

An engine decides where the stages run (:class:`Engine`); the job plans before it and commits after it:

1. ``FileDecoder`` (bytes → sha256 + pixels, or a ``Failed`` record) and ``decode_columns``;
2. ``apply_model(columns, extractor, dim)``: the feature extractor once per batch, on the rows that decoded;
3. :func:`commit`: ``rows_of`` and ``errors_of`` into the one ``DatasetWriter`` (atomic parts, ``_errors.parquet``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from extractor.images.batches import Columns, failures_of
from extractor.images.discover import FileEntry
from extractor.store import DatasetWriter, ErrorRecord

if TYPE_CHECKING:
    from extractor.embed.job import EmbedJob, EmbedSummary

ROW_COLUMNS = ("path", "label", "sha256", "size", "mtime_ns", "width", "height", "embedding")
"""The columns of an embedded batch that rows are made of (the label is the entry's, from its source)."""


def rows_of(columns: Columns) -> dict[str, object]:
    """The dataset rows of the batch's files that decoded (``to_table`` input; ids derive from the paths)."""
    ok = np.asarray(columns["ok"], bool)
    rows: dict[str, object] = {name: np.asarray(columns[name])[ok] for name in ROW_COLUMNS}
    rows["path"] = [str(p) for p in np.asarray(columns["path"])[ok]]
    rows["label"] = [None if label is None else str(label) for label in np.asarray(columns["label"])[ok]]
    return rows


def errors_of(columns: Columns) -> list[ErrorRecord]:
    """The error records of the batch's files that did not decode (with size and mtime, so a rerun skips them
    while unchanged)."""
    return [
        ErrorRecord(path, kind, message, int(columns["size"][i]), int(columns["mtime_ns"][i]))
        for i, path, kind, message in failures_of(columns)
    ]


def commit(writer: DatasetWriter, columns: Columns) -> tuple[int, int]:
    """Hand an embedded batch to the writer: rows of the decoded files, records of the others. Returns
    (embedded, errors)."""
    ok = np.asarray(columns["ok"], bool)
    embedded = int(ok.sum())
    if embedded:
        writer.add(rows_of(columns))
    if embedded < len(ok):
        writer.add_errors(errors_of(columns))
    return embedded, len(ok) - embedded


class Engine(Protocol):
    """Where the stages run: decode, embed and commit the planned files (``todo``) of a job, counting them in
    ``summary``. The job has opened ``writer`` (its lock held) and applied the resume plan."""

    name: str

    def embed(self, job: EmbedJob, todo: list[FileEntry], writer: DatasetWriter, summary: EmbedSummary) -> None: ...
