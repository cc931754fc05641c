"""The embed job's decode stage: one file → its bytes read once, hashed and decoded, or a recorded failure.

Kept free of TensorFlow, pyarrow and the rest of the job so that decode worker processes start in a fraction of a
second (they import this module, Pillow and NumPy only). The stages are split so that other engines and sources
reuse them: ``FileDecoder.read`` (entries' bytes from any input source, ``extractor.images.sources``: local files,
object stores, tar members), ``FileDecoder.decode`` (bytes → sha256 + pixels, or a ``Failed``
record: the one error type of every decode). ``decode_inputs`` decodes paths or bytes in threads, for queries and
predictions.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

from extractor.images.decode import DEFAULT_MAX_PIXELS, DecodeError, ResizeSpec, decode_image
from extractor.images.discover import FileEntry
from extractor.images.sources.base import SourceError, read_entries
from extractor.parallel.stream import ordered_map


@dataclass
class Decoded:
    """A file decoded to the network's input, with what the dataset records about it."""

    entry: FileEntry
    pixels: np.ndarray
    width: int
    height: int
    sha256: bytes
    seconds: float


@dataclass
class Failed:
    """A file that could not be decoded."""

    entry: FileEntry
    error: str
    message: str
    seconds: float


class FileDecoder:
    """Read a file once, hash its bytes, decode them to RGB uint8 at the input size."""

    def __init__(self, resize: ResizeSpec, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.resize = resize
        self.max_pixels = max_pixels

    def __call__(self, entry: FileEntry) -> Decoded | Failed:
        return self.many([entry])[0]

    @staticmethod
    def read(entries: list[FileEntry]) -> tuple[list[bytes | OSError], float]:
        """The entries' bytes (or each one's read error), fetched together (an object store's concurrently),
        and the seconds that took per entry."""
        start = time.perf_counter()
        data = read_entries(entries)
        return data, (time.perf_counter() - start) / max(1, len(entries))

    def decode_read(self, entry: FileEntry, data: bytes | OSError, seconds: float = 0.0) -> Decoded | Failed:
        """``decode`` of what ``read`` gave for ``entry`` (a read error becomes its ``Failed`` record)."""
        if isinstance(data, SourceError):
            return Failed(entry, data.kind, data.message, seconds)
        if isinstance(data, OSError):
            return Failed(entry, "unreadable", f"cannot read it: {data.strerror or data}", seconds)
        return self.decode(entry, data, time.perf_counter() - seconds)

    def decode(self, entry: FileEntry, data: bytes, start: float | None = None) -> Decoded | Failed:
        """sha256 and decode of ``entry``'s bytes (the stage that needs no file system)."""
        start = time.perf_counter() if start is None else start
        try:
            image = decode_image(data, self.resize, self.max_pixels)
        except DecodeError as exc:
            return Failed(entry, exc.kind, str(exc), time.perf_counter() - start)
        digest = hashlib.sha256(data).digest()
        return Decoded(entry, image.pixels, image.width, image.height, digest, time.perf_counter() - start)

    def many(self, entries: list[FileEntry], data: list[bytes | OSError] | None = None) -> list[Decoded | Failed]:
        """Read (unless ``data`` holds what was read already) and decode a chunk of files (one task for a worker
        process: fewer, larger messages)."""
        data, seconds = self.read(entries) if data is None else (data, 0.0)
        return [self.decode_read(entry, d, seconds) for entry, d in zip(entries, data)]

    def one_input(self, item: ImageInput, name: str | None = None) -> Decoded | Failed:
        """Decode a path or the bytes of an image (a query, an upload); ``name`` labels bytes (default
        ``<bytes>``). Bytes have no file: their entry's ``abs_path`` is empty and ``mtime_ns`` 0."""
        if isinstance(item, (bytes, bytearray, memoryview)):
            data = bytes(item)
            return self.decode(FileEntry(name or "<bytes>", "", len(data), 0), data)
        path = os.fspath(item)
        try:
            st = os.stat(path)
        except OSError:
            st = None
        return self(FileEntry(name or path, path, st.st_size if st else 0, st.st_mtime_ns if st else 0))


ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]
"""What the query-side helpers accept: a path, or an image's bytes."""


def decode_inputs(
    inputs: Sequence[ImageInput],
    decoder: FileDecoder,
    workers: int = 2,
    in_flight: int = 64,
    names: Sequence[str] | None = None,
) -> Iterator[Decoded | Failed]:
    """Each input decoded (paths read once, bytes as they are), in order, in ``workers`` threads (Pillow
    releases the GIL while it decodes): queries, predictions, uploads. ``names`` label the results."""
    labels = names if names is not None else [None] * len(inputs)
    return ordered_map(lambda pair: decoder.one_input(*pair), list(zip(inputs, labels)), max(1, workers), in_flight)
