"""What every input source shares: the ``Source`` protocol, the one reader of entries, change tokens, URLs.

A source lists entries (:class:`~extractor.images.discover.FileEntry`: relative key, label, size, change token,
where the bytes are) and reads them. Reading depends only on the entry (a local path or a URL, the whole of it or
a byte range), so one function, :func:`read_entries`, reads for every source, in decode processes and Ray tasks
alike: nothing but the entries travels to them. Object stores are reached through fsspec (``s3fs``, ``gcsfs``,
``adlfs``), which takes credentials and endpoints from the usual environment variables and configuration files.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from extractor.errors import AlexfeatError
from extractor.images.discover import IMAGE_EXTENSIONS, FileEntry
from extractor.util.hashing import file_sha256

EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
"""The alexfeat extra that installs the fsspec package of a URL scheme (others: see fsspec's registry)."""


class SourceError(OSError):
    """An entry, or a part of a source, that cannot be listed or read; ``kind`` is the error kind recorded in
    ``_errors.parquet`` (``missing``, ``truncated``, ``unreadable``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # travels back from decode processes
        return (SourceError, (self.kind, self.message))


OnError = Callable[[str, OSError], None]
"""Called with the relative key and the error of what a listing had to skip (the job records it)."""


class Source(Protocol):
    """An input source: a folder, a manifest, an object-store prefix or tar shards.

    ``root`` is what the dataset's metadata records (an absolute folder or a URL without credentials): stored
    keys are relative to it, so :func:`extractor.images.sources.stored_images` reads them back from it."""

    @property
    def root(self) -> str: ...

    def list(self, on_error: OnError | None = None) -> Iterator[FileEntry]:
        """The entries, sorted by key; what cannot be listed goes to ``on_error`` (never fatal)."""
        ...


def is_url(text: str) -> bool:
    """Whether ``text`` is a URL (``scheme://...``) rather than a local path."""
    return "://" in text


def public_url(url: str) -> str:
    """``url`` without user, password, query or fragment: what may be recorded and shown."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path within it; AlexfeatError naming the package to install."""
    scheme = url.split("://", 1)[0].lower()
    extra = EXTRAS.get(scheme)
    hint = f"pip install 'alexfeat[{extra}]'" if extra else "install the fsspec package for it (Azure: adlfs)"
    try:
        import fsspec
    except ImportError:
        raise AlexfeatError(f"reading {scheme}:// URLs needs fsspec: {hint}") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise AlexfeatError(f"cannot read {scheme}:// URLs ({exc}): {hint}") from None


def join_key(root: str, key: str) -> str:
    """Where a stored key is: ``key`` itself when it is a URL or an absolute path, else under ``root``."""
    if is_url(key) or os.path.isabs(key):
        return key
    return posixpath.join(root, key) if is_url(root) else os.path.join(root, key)


def is_image_key(key: str) -> bool:
    """Whether a relative key names an image to embed: an image extension, no hidden component."""
    parts = key.split("/")
    return os.path.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS and not any(p.startswith(".") for p in parts)


def change_token(info: dict[str, Any]) -> int:
    """An object's change token from its listing, in ``mtime_ns``'s place: its modification time to the second,
    with the sub-second nanoseconds taken from its ETag (or generation, or MD5), so a rewrite within the same
    second still changes it. No download is needed to tell an unchanged object."""
    when = next((info[k] for k in ("LastModified", "last_modified", "updated", "mtime", "created") if info.get(k)), 0)
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    seconds = int(when.timestamp()) if isinstance(when, datetime) else int(float(when))
    tag = next((str(info[k]) for k in ("ETag", "etag", "generation", "md5Hash", "md5") if info.get(k)), "")
    digest = int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "big") % 10**9 if tag else 0
    return seconds * 10**9 + digest


def read_entries(entries: Sequence[FileEntry]) -> list[bytes | OSError]:
    """The bytes of each entry, or the OSError that reading it raised (``SourceError`` ``truncated`` for a byte
    range cut short), in order. Entries in object stores are fetched concurrently (one fsspec call for all)."""
    out: list[bytes | OSError | None] = [None] * len(entries)
    remote: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        if is_url(entry.abs_path):
            remote.setdefault(entry.abs_path.split("://", 1)[0], []).append(i)
        else:
            out[i] = _read_local(entry)
    for rows in remote.values():
        fs, _ = filesystem(entries[rows[0]].abs_path)
        paths = [entries[i].abs_path for i in rows]
        starts = [entries[i].offset for i in rows]
        ends = [None if (start := entries[i].offset) is None else start + entries[i].size for i in rows]
        try:
            fetched = fs.cat_ranges(paths, starts, ends, on_error="return")
        except Exception as exc:  # the store itself failed (unreachable): every entry records it
            fetched = [exc] * len(rows)
        for i, data in zip(rows, fetched):
            out[i] = _checked(entries[i], data)
    return [r if r is not None else OSError("not read") for r in out]


def read_entry(entry: FileEntry) -> bytes:
    """One entry's bytes; raises what :func:`read_entries` returns for it."""
    (data,) = read_entries([entry])
    if isinstance(data, OSError):
        raise data
    return data


def entry_sha256(entry: FileEntry) -> bytes:
    """The sha256 of an entry's bytes (a local whole file streamed, anything else read through its source)."""
    if entry.offset is None and not is_url(entry.abs_path):
        return file_sha256(entry.abs_path)
    return hashlib.sha256(read_entry(entry)).digest()


def _read_local(entry: FileEntry) -> bytes | OSError:
    try:
        with open(entry.abs_path, "rb") as fh:
            if entry.offset is None:
                return fh.read()
            fh.seek(entry.offset)
            return _checked(entry, fh.read(entry.size))
    except OSError as exc:
        return exc


def _checked(entry: FileEntry, data: Any) -> bytes | OSError:
    if isinstance(data, OSError):
        return data
    if isinstance(data, BaseException):  # a store's own error type (botocore, aiohttp): keep its words
        return OSError(f"{type(data).__name__}: {data}")
    if entry.offset is not None and len(data) < entry.size:
        return SourceError("truncated", f"the file ends {entry.size - len(data)} bytes short of this member's end")
    return bytes(data)
