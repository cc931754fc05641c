"""The embed job's decode stage: one file → its bytes read once, hashed and decoded, or a recorded failure.

Kept free of TensorFlow, pyarrow and the rest of the job so that decode worker processes start in a fraction of a
second (they import this module, Pillow and NumPy only). The stages are split so that other engines and sources
reuse them: ``read_bytes`` (an entry's bytes), ``FileDecoder.decode`` (bytes → sha256 + pixels, or a ``Failed``
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


def read_bytes(entry: FileEntry) -> bytes:
    """The bytes of an entry, read once (a local or shared file system; other sources read their own way)."""
    with open(entry.abs_path, "rb") as fh:
        return fh.read()


class FileDecoder:
    """Read a file once, hash its bytes, decode them to RGB uint8 at the input size."""

    def __init__(self, resize: ResizeSpec, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.resize = resize
        self.max_pixels = max_pixels

    def __call__(self, entry: FileEntry) -> Decoded | Failed:
        start = time.perf_counter()
        try:
            data = read_bytes(entry)
        except OSError as exc:
            return Failed(entry, "unreadable", f"cannot read file: {exc.strerror or exc}", time.perf_counter() - start)
        return self.decode(entry, data, start)

    def decode(self, entry: FileEntry, data: bytes, start: float | None = None) -> Decoded | Failed:
        """sha256 and decode of ``entry``'s bytes (the stage that needs no file system)."""
        start = time.perf_counter() if start is None else start
        try:
            image = decode_image(data, self.resize, self.max_pixels)
        except DecodeError as exc:
            return Failed(entry, exc.kind, str(exc), time.perf_counter() - start)
        digest = hashlib.sha256(data).digest()
        return Decoded(entry, image.pixels, image.width, image.height, digest, time.perf_counter() - start)

    def many(self, entries: list[FileEntry]) -> list[Decoded | Failed]:
        """Decode a chunk of files (one task for a worker process: fewer, larger messages)."""
        return [self(entry) for entry in entries]

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
