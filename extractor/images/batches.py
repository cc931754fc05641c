"""The one decode → batch → model helper, and the columnar form of a decoded batch that every engine passes on.

A batch of decode results (:class:`~extractor.images.file_decoder.Decoded` or ``Failed``) becomes plain numpy
columns (:func:`decode_columns`): what a process pool returns, what a Ray Data ``map_batches`` stage takes and
gives, what the store turns into rows. A model (the feature extractor, a classifier) then runs once per batch on
the rows that decoded (:func:`apply_model`), and failed rows travel beside them as error records, so a bad file
never stops or re-runs its batch.

:func:`map_images` is the whole loop for queries and predictions: paths or bytes in, decoded in threads,
batched, through the model, results in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from extractor.images.decode import DEFAULT_MAX_PIXELS, ResizeSpec
from extractor.images.discover import FileEntry
from extractor.images.file_decoder import Decoded, Failed, FileDecoder, ImageInput, decode_inputs
from extractor.parallel.stream import batched

Columns = dict[str, np.ndarray]
"""A batch as named numpy columns of equal length."""

ENTRY_COLUMNS = ("path", "abs_path", "size", "mtime_ns", "label", "offset")
"""An entry to embed: relative key, where its bytes are (a path or URL; ``offset`` -1: all of it, else a byte
range), size, change token (mtime_ns) and label."""

DECODED_COLUMNS = (
    "path",
    "label",
    "size",
    "mtime_ns",
    "ok",
    "sha256",
    "width",
    "height",
    "error",
    "message",
    "seconds",
)
"""A decoded batch: the entry, whether it decoded, what the dataset records, the error of a failed file, and
``pixels`` (uint8, zeros where it failed) until the model has run."""


def entry_columns(entries: Sequence[FileEntry]) -> Columns:
    """Entries as columns (what an engine ships to its decode tasks)."""
    return {
        "path": np.array([e.path for e in entries], dtype=object),
        "abs_path": np.array([e.abs_path for e in entries], dtype=object),
        "size": np.array([e.size for e in entries], np.int64),
        "mtime_ns": np.array([e.mtime_ns for e in entries], np.int64),
        "label": np.array([e.label for e in entries], dtype=object),
        "offset": np.array([-1 if e.offset is None else e.offset for e in entries], np.int64),
    }


def entries_of(columns: Columns) -> list[FileEntry]:
    """The entries in ``entry_columns`` form."""
    return [
        FileEntry(str(path), str(abs_path), int(size), int(mtime), None if label is None else str(label), offset)
        for path, abs_path, size, mtime, label, offset in zip(
            columns["path"],
            columns["abs_path"],
            columns["size"].tolist(),
            columns["mtime_ns"].tolist(),
            columns["label"],
            [None if o < 0 else o for o in columns["offset"].tolist()],
        )
    ]


def decode_columns(results: Sequence[Decoded | Failed], input_size: int) -> Columns:
    """Decode results as columns (``DECODED_COLUMNS`` and ``pixels``), in order; failed rows have ``ok`` False,
    zero pixels and their error kind and message."""
    n = len(results)
    pixels = np.zeros((n, input_size, input_size, 3), np.uint8)
    sha256 = np.zeros((n, 32), np.uint8)
    width, height = np.zeros(n, np.int32), np.zeros(n, np.int32)
    ok = np.zeros(n, bool)
    error, message = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    for i, result in enumerate(results):
        if isinstance(result, Decoded):
            ok[i] = True
            pixels[i] = result.pixels
            sha256[i] = np.frombuffer(result.sha256, np.uint8)
            width[i], height[i] = result.width, result.height
        else:
            error[i], message[i] = result.error, result.message
    return {
        "path": np.array([r.entry.path for r in results], dtype=object),
        "label": np.array([r.entry.label for r in results], dtype=object),
        "size": np.array([r.entry.size for r in results], np.int64),
        "mtime_ns": np.array([r.entry.mtime_ns for r in results], np.int64),
        "ok": ok,
        "sha256": sha256,
        "width": width,
        "height": height,
        "error": error,
        "message": message,
        "seconds": np.array([r.seconds for r in results], np.float64),
        "pixels": pixels,
    }


def apply_model(
    columns: Columns, model: Callable[[np.ndarray], np.ndarray], dim: int, name: str = "embedding"
) -> Columns:
    """``columns`` with ``pixels`` replaced by ``name``: ``model`` run once on the rows that decoded, float32
    (n, ``dim``), zeros in failed rows (and no call at all when none decoded)."""
    out = {key: value for key, value in columns.items() if key != "pixels"}
    ok = columns["ok"]
    values = np.zeros((len(ok), dim), np.float32)
    if ok.any():
        values[ok] = model(columns["pixels"][ok] if not ok.all() else columns["pixels"])
    out[name] = values
    return out


def failures_of(columns: Columns) -> list[tuple[int, str, str, str]]:
    """``(row, path, error kind, message)`` of each failed row."""
    rows = np.flatnonzero(~columns["ok"]).tolist()
    return [(i, str(columns["path"][i]), str(columns["error"][i]), str(columns["message"][i])) for i in rows]


@dataclass
class ImageResults:
    """What :func:`map_images` gives: the model's output for the inputs that decoded, their positions among
    the inputs, and one ``(position, name, error kind, message)`` per input that did not."""

    values: np.ndarray
    indices: list[int]
    failures: list[tuple[int, str, str, str]]


def image_batches(
    inputs: Sequence[ImageInput],
    resize: ResizeSpec,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    batch_size: int = 32,
    workers: int = 2,
    names: Sequence[str] | None = None,
) -> Iterator[Columns]:
    """``inputs`` (paths or image bytes) decoded in ``workers`` threads, in order, as ``decode_columns``
    batches of ``batch_size``; ``names`` label them (default: the path, or ``<bytes>``)."""
    decoder = FileDecoder(resize, max_pixels)
    decoded = decode_inputs(inputs, decoder, workers, 4 * batch_size, names)
    for batch in batched(decoded, batch_size):
        yield decode_columns(batch, resize.output_size)


def map_images(
    model: Callable[[np.ndarray], np.ndarray],
    dim: int,
    inputs: Sequence[ImageInput],
    resize: ResizeSpec,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    batch_size: int = 32,
    workers: int = 2,
    names: Sequence[str] | None = None,
) -> ImageResults:
    """Decode ``inputs`` (paths or bytes, in threads), run ``model`` on uint8 batches, keep inputs' order; an
    input that cannot be decoded is a failure, never an exception."""
    chunks, indices, failures = [], [], []
    first = 0
    for columns in image_batches(inputs, resize, max_pixels, batch_size, workers, names):
        out = apply_model(columns, model, dim)
        ok = out["ok"]
        chunks.append(out["embedding"][ok])
        indices += (first + np.flatnonzero(ok)).tolist()
        failures += [(first + i, path, kind, message) for i, path, kind, message in failures_of(out)]
        first += len(ok)
    values = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return ImageResults(values, indices, failures)
