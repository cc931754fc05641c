"""Test inputs for the sources: WebDataset-style tar shards and manifests, written with the standard library."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from tests.imagefiles import photo_pixels


def jpeg_bytes(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(photo_pixels(size, seed)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def make_shard(path: str | os.PathLike[str], members: dict[str, bytes], mtime: int = 1_600_000_000) -> Path:
    """A tar file of ``members`` (name → bytes), in that order (WebDataset writes each sample's files together)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            archive.addfile(info, io.BytesIO(data))
    return path


def samples(first: int, count: int, classes: tuple[str, ...] = ("cat", "dog")) -> dict[str, bytes]:
    """``count`` WebDataset samples: ``s<N>.jpg`` with a ``s<N>.cls`` label member."""
    members = {}
    for n in range(first, first + count):
        members[f"s{n:04d}.jpg"] = jpeg_bytes(n)
        members[f"s{n:04d}.cls"] = classes[n % len(classes)].encode()
    return members
