"""The embed job's decode stage: one file → its bytes read once, hashed and decoded, or a recorded failure.

Kept free of TensorFlow, pyarrow and the rest of the job so that decode worker processes start in a fraction of a
second (they import this module, Pillow and NumPy only). ``decode_paths`` decodes plain paths in threads, for
queries and predictions.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

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


class FileDecoder:
    """Read a file once, hash its bytes, decode them to RGB uint8 at the input size."""

    def __init__(self, resize: ResizeSpec, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.resize = resize
        self.max_pixels = max_pixels

    def __call__(self, entry: FileEntry) -> Decoded | Failed:
        start = time.perf_counter()
        try:
            with open(entry.abs_path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            return Failed(entry, "unreadable", f"cannot read file: {exc.strerror or exc}", time.perf_counter() - start)
        try:
            image = decode_image(data, self.resize, self.max_pixels)
        except DecodeError as exc:
            return Failed(entry, exc.kind, str(exc), time.perf_counter() - start)
        digest = hashlib.sha256(data).digest()
        return Decoded(entry, image.pixels, image.width, image.height, digest, time.perf_counter() - start)

    def many(self, entries: list[FileEntry]) -> list[Decoded | Failed]:
        """Decode a chunk of files (one task for a worker process: fewer, larger messages)."""
        return [self(entry) for entry in entries]


def decode_paths(
    paths: Sequence[str | os.PathLike[str]],
    resize: ResizeSpec,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 2,
    in_flight: int = 64,
) -> Iterator[np.ndarray | DecodeError]:
    """Pixels of each path, or its ``DecodeError``, in order; decoded in ``workers`` threads (queries, predict)."""
    return ordered_map(
        functools.partial(_pixels_or_error, resize=resize, max_pixels=max_pixels), paths, workers, in_flight
    )


def _pixels_or_error(path: str | os.PathLike[str], resize: ResizeSpec, max_pixels: int) -> np.ndarray | DecodeError:
    try:
        return decode_image(path, resize, max_pixels).pixels
    except DecodeError as exc:
        return exc
