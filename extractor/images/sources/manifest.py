"""The manifest source (``alexfeat embed --from-list FILE``): the images a file lists, local paths or URLs.

FILE is a text file (one path or URL a line; blank lines and ``#`` comments skipped), a CSV file with a header,
or a Parquet file; the latter two need a ``path`` column and may have a ``label`` column. Relative paths resolve
against ``root`` (``--root``), or else the manifest's folder; that root is what the dataset records, and a path
under it is stored relative to it (as the folder source stores it), anything else as written. The label is the
``label`` column's value where given, else the path's first folder. A listed file that does not exist is
recorded as ``missing`` (never fatal); a path listed twice is embedded once.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from extractor.errors import AlexfeatError
from extractor.images.discover import FileEntry, label_of, stored_name
from extractor.images.sources.base import OnError, SourceError, change_token, filesystem, is_url, public_url

log = logging.getLogger(__name__)

STAT_THREADS = 16
"""Object-store look-ups in flight while a manifest of URLs is listed."""


@dataclass(frozen=True)
class ManifestSource:
    """The images listed in ``manifest`` (a .txt, .csv or .parquet file), relative paths under ``root``."""

    manifest: str
    base: str | None = None  # --root; default: the manifest's folder
    root: str = field(init=False)

    def __post_init__(self) -> None:
        if self.base is not None:
            root = self.base if is_url(self.base) else os.path.abspath(self.base)
        elif is_url(self.manifest):
            root = posixpath.dirname(self.manifest)
        else:
            root = os.path.dirname(os.path.abspath(self.manifest))
        object.__setattr__(self, "root", root.rstrip("/") or "/")
        if not is_url(self.manifest) and not os.path.isfile(self.manifest):  # fail before any work
            raise AlexfeatError(f"the manifest {self.manifest} does not exist (or is not a file)")

    def rows(self) -> list[tuple[str, str | None]]:
        """The manifest's (path, label) rows, as written; AlexfeatError when it cannot be read or has no paths."""
        try:
            data = _read(self.manifest)
        except OSError as exc:
            raise AlexfeatError(f"cannot read the manifest {self.manifest}: {exc}") from None
        kind = self.manifest.rsplit(".", 1)[-1].lower()
        if kind == "parquet":
            return _parquet_rows(data, self.manifest)
        if kind == "csv":
            return _csv_rows(data, self.manifest)
        text = data.decode("utf-8", "surrogateescape")
        return [(line.strip(), None) for line in text.splitlines() if line.strip() and not line.startswith("#")]

    def list(self, on_error: OnError | None = None) -> Iterator[FileEntry]:
        seen: set[str] = set()
        located: list[tuple[str, str, str | None]] = []  # key, location, label
        rows = self.rows()
        for path, label in rows:
            key, where = self._locate(path)
            key = stored_name(key)  # bytes of a path that are not UTF-8 as \xNN, as the folder source stores them
            if key in seen:
                continue
            seen.add(key)
            located.append((key, where, label if label else (None if _is_absolute(key) else label_of(key))))
        if len(seen) < len(rows):
            log.warning("the manifest lists some paths more than once: each is embedded once")
        stats = _stat_all([where for _, where, _ in located])
        entries = []
        for (key, where, label), stat in zip(located, stats):
            if isinstance(stat, OSError):
                if on_error is not None:
                    on_error(key, stat)
                continue
            entries.append(FileEntry(key, where, stat[0], stat[1], label))
        return iter(entries)

    def _locate(self, path: str) -> tuple[str, str]:
        """(stored key, where the bytes are) of a manifest path."""
        if is_url(path):
            prefix = self.root + "/"
            return (path[len(prefix) :] if path.startswith(prefix) else public_url(path)), path
        if is_url(self.root):
            key = posixpath.normpath(path)
            return (path, path) if os.path.isabs(path) else (key, posixpath.join(self.root, key))
        where = os.path.normpath(os.path.join(self.root, path))
        rel = os.path.relpath(where, self.root)
        key = where if rel == ".." or rel.startswith("../") else rel
        return key.replace(os.sep, "/"), where


def _is_absolute(key: str) -> bool:
    return is_url(key) or key.startswith("/")


def _shown(where: str) -> str:
    return public_url(where) if is_url(where) else where


def _read(location: str) -> bytes:
    if is_url(location):
        fs, path = filesystem(location)
        return fs.cat_file(path)
    with open(location, "rb") as fh:
        return fh.read()


def _csv_rows(data: bytes, name: str) -> list[tuple[str, str | None]]:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    if "path" not in (reader.fieldnames or []):
        raise AlexfeatError(f"the manifest {name} has no 'path' column (its header: {reader.fieldnames})")
    return [(row["path"].strip(), (row.get("label") or "").strip() or None) for row in reader if row["path"]]


def _parquet_rows(data: bytes, name: str) -> list[tuple[str, str | None]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except pa.ArrowException as exc:
        raise AlexfeatError(f"cannot read the manifest {name} as Parquet: {exc}") from None
    if "path" not in table.column_names:
        raise AlexfeatError(f"the manifest {name} has no 'path' column (its columns: {table.column_names})")
    paths = [str(p) for p in table.column("path").to_pylist()]
    labels: list[Any] = table.column("label").to_pylist() if "label" in table.column_names else [None] * len(paths)
    return [(p, None if label is None else str(label)) for p, label in zip(paths, labels) if p]


def _stat_all(locations: list[str]) -> list[tuple[int, int] | OSError]:
    """(size, change token) of each location, or the error (``missing`` when it does not exist)."""

    def one(where: str) -> tuple[int, int] | OSError:
        try:
            if is_url(where):
                fs, path = filesystem(where)
                info = fs.info(path)
                return int(info.get("size") or 0), change_token(info)
            st = os.stat(where)
        except FileNotFoundError:
            return SourceError("missing", f"listed in the manifest, not found: {_shown(where)}")
        except OSError as exc:
            return exc
        except Exception as exc:  # an object store's own error
            return OSError(f"{type(exc).__name__}: {exc}")
        if not os.path.isfile(where):
            return SourceError("missing", f"listed in the manifest, not a file: {where}")
        return st.st_size, st.st_mtime_ns

    if not any(is_url(where) for where in locations):
        return [one(where) for where in locations]
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        return list(pool.map(one, locations))
