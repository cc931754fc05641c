"""Content hashes of files, read in bounded chunks so any file size fits in memory."""

from __future__ import annotations

import hashlib
import os

CHUNK_SIZE = 1 << 20


def file_sha256(path: str | os.PathLike[str], chunk_size: int = CHUNK_SIZE) -> bytes:
    """The 32-byte sha256 digest of a file's bytes, streamed in ``chunk_size`` chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.digest()
