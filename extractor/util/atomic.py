"""Atomic file writes: write a hidden temporary file beside the target, then rename it into place."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from extractor.errors import AlexfeatError


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file or a directory (its entries: a rename in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(target: Path) -> Path:
    """The hidden temporary name used while ``target`` is being written (``.NAME.tmp``)."""
    return target.with_name(f".{target.name}.tmp")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` atomically, on error it is removed."""
    target = Path(target)
    tmp = temp_path_for(target)
    try:
        yield tmp
        if tmp.exists():
            fsync_path(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))


def check_replaceable(target: str | os.PathLike[str]) -> None:
    """AlexfeatError when ``target`` cannot be replaced as a whole: it is the current directory or one above it."""
    here = Path.cwd()
    if Path(os.path.abspath(target)) in (here, *here.parents):
        raise AlexfeatError(
            f"output {os.fspath(target)!r} is the current directory or one above it, which cannot be replaced as a "
            "whole; name a new directory (e.g. -o out)"
        )


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging directory (``.NAME.tmp``); on success it replaces ``target`` as a whole.

    The previous ``target`` is moved aside (``.NAME.old``) and deleted after the swap; on error the staging
    directory is removed and ``target`` is left as it was.
    """
    import shutil

    check_replaceable(target)
    target = Path(target)
    staging = temp_path_for(target)
    old = target.with_name(f".{target.name}.old")
    for stale in (staging, old):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        yield staging
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
