"""The index directory on disk: ``index.faiss``, ``index.json``, the ``ids.parquet`` lookup, masked ids.

::

    index.faiss       the FAISS index, keyed by the dataset's ids; ``faiss.read_index`` opens it as it is
    index.json        factory, metric, dim, count, search_params, recall_at_10, build_seconds,
                      embedding_metadata, and the bookkeeping below (file sizes, removal mode, phases)
    index.ivfdata     the inverted lists of a sharded build (``storage: ondisk``), read in place (read-only)
    ids.parquet       id, path, label, sha256 of every searchable vector, sorted by id
    masked_ids.npy    ids removed from an index type that cannot remove them (never returned by a search)

Every file is written atomically, ``index.json`` last: it records the sizes of the others, so a reader can tell
a cut-short or foreign file from a good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from extractor.errors import DatasetError, IndexDirError
from extractor.store import EmbeddingMeta
from extractor.util.atomic import atomic_path, write_text_atomic
from index.ops import faiss_reason

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
INFO_FILE = "index.json"
LOOKUP_FILE = "ids.parquet"
MASKED_FILE = "masked_ids.npy"
IVFDATA_FILE = "index.ivfdata"
"""The inverted lists of a merged (sharded, on-disk) index, beside ``index.faiss``; ``index.json`` then has
``"storage": "ondisk"``."""
REQUIRED_KEYS = (
    "factory",
    "metric",
    "dim",
    "count",
    "search_params",
    "recall_at_10",
    "build_seconds",
    "embedding_metadata",
)
LOOKUP_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=True),
        pa.field("sha256", pa.binary(32), nullable=False),
    ]
)


@dataclass
class Lookup:
    """id → path, label, sha256 of the searchable vectors; rows sorted by id."""

    ids: np.ndarray
    paths: list[str]
    labels: list[str | None]
    sha256: list[bytes]

    @classmethod
    def from_rows(cls, ids: np.ndarray, paths: list[str], labels: list[str | None], sha256: list[bytes]) -> Lookup:
        order = np.argsort(ids, kind="stable")
        ids = np.asarray(ids, dtype=np.int64)[order]
        if ids.size > 1 and not (np.diff(ids) > 0).all():
            raise IndexDirError("the dataset repeats ids; it is corrupt: embed it again")
        pick = order.tolist()
        return cls(ids, [paths[i] for i in pick], [labels[i] for i in pick], [sha256[i] for i in pick])

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, ids: Iterable[int]) -> np.ndarray:
        """Row of each id; -1 for ids not here."""
        wanted = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        if not len(self.ids):
            return np.full(len(wanted), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, wanted), len(self.ids) - 1)
        return np.where(self.ids[pos] == wanted, pos, -1)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return self.positions(ids) >= 0

    def path_to_id(self) -> dict[str, int]:
        return dict(zip(self.paths, self.ids.tolist()))

    def select(self, keep: np.ndarray) -> Lookup:
        """The rows where the boolean mask ``keep`` is true."""
        rows = np.flatnonzero(keep).tolist()
        return Lookup(
            self.ids[keep],
            [self.paths[i] for i in rows],
            [self.labels[i] for i in rows],
            [self.sha256[i] for i in rows],
        )

    def without(self, ids: np.ndarray) -> Lookup:
        return self.select(~np.isin(self.ids, ids))

    def merged(self, other: Lookup) -> Lookup:
        """These rows with ``other``'s added; ``other`` wins where both have an id."""
        mine = self.without(other.ids)
        return Lookup.from_rows(
            np.concatenate([mine.ids, other.ids]),
            mine.paths + other.paths,
            mine.labels + other.labels,
            mine.sha256 + other.sha256,
        )

    def to_table(self) -> pa.Table:
        return pa.Table.from_arrays(
            [
                pa.array(self.ids, pa.int64()),
                pa.array(self.paths, pa.string()),
                pa.array(self.labels, pa.string()),
                pa.array(self.sha256, pa.binary(32)),
            ],
            schema=LOOKUP_SCHEMA,
        )

    @classmethod
    def from_table(cls, table: pa.Table) -> Lookup:
        return cls.from_rows(
            table.column("id").to_numpy(),
            table.column("path").to_pylist(),
            table.column("label").to_pylist(),
            table.column("sha256").to_pylist(),
        )


@dataclass
class IndexDir:
    """An opened index directory: the FAISS index, its description, the lookup and the masked ids."""

    path: Path
    index: faiss.Index
    info: dict[str, Any]
    lookup: Lookup
    masked: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    @property
    def meta(self) -> EmbeddingMeta:
        try:
            return EmbeddingMeta.from_json(
                json.dumps(self.info["embedding_metadata"]), where=str(self.path / INFO_FILE)
            )
        except DatasetError as exc:
            raise IndexDirError(str(exc)) from None

    @property
    def search_params(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.info["search_params"].items()}


def _fail(directory: Path, problem: str) -> IndexDirError:
    return IndexDirError(
        f"{directory} is not a usable alexfeat index: {problem}. Rebuild it with "
        f"`alexfeat index build EMB_DIR -o {directory}`"
    )


def prepare_output(directory: str | os.PathLike[str]) -> Path:
    """Create the output directory of a build; refuse a non-empty directory that is not an alexfeat index."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IndexDirError(
            f"cannot create index directory {directory} ({exc.strerror}); choose a writable place"
        ) from None
    if not directory.is_dir():
        raise IndexDirError(f"{directory} exists and is not a directory")
    foreign = [
        n
        for n in sorted(os.listdir(directory))
        if not n.startswith(".") and n not in (INDEX_FILE, INFO_FILE, LOOKUP_FILE, MASKED_FILE, IVFDATA_FILE)
    ]
    if foreign and not (directory / INFO_FILE).exists():
        raise IndexDirError(
            f"{directory} is not empty and holds no alexfeat index ({', '.join(foreign[:3])}); "
            "choose a new or empty directory"
        )
    return directory


def write_index_dir(
    directory: Path,
    info: dict[str, Any],
    lookup: Lookup,
    index: faiss.Index | None = None,
    masked: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write the directory's files atomically, ``index.json`` last; ``index=None`` keeps ``index.faiss`` as it is.

    Fills in the bookkeeping keys of ``info`` (count, file sizes, masked count) and returns it.
    """
    masked = np.unique(np.asarray(masked if masked is not None else [], dtype=np.int64))
    try:
        if index is not None:
            with atomic_path(directory / INDEX_FILE) as tmp:
                faiss.write_index(index, str(tmp))
            info["ntotal"] = int(index.ntotal)
        with atomic_path(directory / LOOKUP_FILE) as tmp:
            pq.write_table(lookup.to_table(), tmp, compression="zstd")
        masked_path = directory / MASKED_FILE
        if masked.size:
            with atomic_path(masked_path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, masked)
        elif masked_path.exists():
            masked_path.unlink()
        info.update(
            count=len(lookup),
            masked_count=int(masked.size),
            masked_ids_file=MASKED_FILE if masked.size else None,
            format_version=FORMAT_VERSION,
            files={
                name: (directory / name).stat().st_size
                for name in (INDEX_FILE, LOOKUP_FILE) + ((IVFDATA_FILE,) if info.get("storage") == "ondisk" else ())
            },
        )
        ordered = {key: info[key] for key in REQUIRED_KEYS} | info  # the docs/design.md keys first
        write_text_atomic(directory / INFO_FILE, json.dumps(ordered, indent=2) + "\n")
    except (OSError, RuntimeError) as exc:
        raise IndexDirError(f"cannot write the index to {directory} ({exc}); check the space and permissions") from None
    return info


def read_info(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``index.json`` of an index directory, checked for the required keys and a readable format version."""
    directory = Path(directory)
    if not directory.is_dir():
        raise IndexDirError(
            f"index directory {directory} does not exist; build it with `alexfeat index build EMB_DIR -o {directory}`"
        )
    path = directory / INFO_FILE
    try:
        info = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise _fail(directory, f"{INFO_FILE} is missing") from None
    except (OSError, ValueError) as exc:
        raise _fail(directory, f"{INFO_FILE} cannot be read ({exc})") from None
    if not isinstance(info, dict):
        raise _fail(directory, f"{INFO_FILE} is not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in info]
    if missing:
        raise _fail(directory, f"{INFO_FILE} lacks {', '.join(missing)}")
    if int(info.get("format_version", 1)) > FORMAT_VERSION:
        raise IndexDirError(
            f"{directory} was written by a newer alexfeat (index format {info['format_version']}); "
            "upgrade alexfeat to read it"
        )
    return info


def _checked_size(directory: Path, name: str, info: dict[str, Any]) -> Path:
    path = directory / name
    if not path.is_file():
        raise _fail(directory, f"{name} is missing")
    expected = info.get("files", {}).get(name)
    actual = path.stat().st_size
    if expected is not None and actual != expected:
        raise _fail(
            directory, f"{name} is {actual:,} bytes but {INFO_FILE} recorded {expected:,}: it was cut short or replaced"
        )
    return path


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null for the duration (C++ code prints there directly)."""
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def open_index_dir(directory: str | os.PathLike[str]) -> IndexDir:
    """Open and check an index directory: every file present, complete and consistent with ``index.json``."""
    directory = Path(directory)
    info = read_info(directory)
    index_path = _checked_size(directory, INDEX_FILE, info)
    flags = 0
    if info.get("storage") == "ondisk":  # lists in index.ivfdata beside it, wherever the directory now is
        _checked_size(directory, IVFDATA_FILE, info)
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
    try:
        with _stdout_silenced():  # FAISS prints where it found index.ivfdata on standard output
            index = faiss.read_index(str(index_path), flags)
    except RuntimeError as exc:
        raise _fail(directory, f"{INDEX_FILE} cannot be read by FAISS ({faiss_reason(exc)})") from None
    if index.d != int(info["dim"]):
        raise _fail(directory, f"{INDEX_FILE} holds {index.d}-d vectors but {INFO_FILE} says {info['dim']}")
    if "ntotal" in info and index.ntotal != info["ntotal"]:
        raise _fail(directory, f"{INDEX_FILE} holds {index.ntotal:,} vectors but {INFO_FILE} says {info['ntotal']:,}")
    lookup_path = _checked_size(directory, LOOKUP_FILE, info)
    try:
        lookup = Lookup.from_table(pq.read_table(lookup_path, schema=LOOKUP_SCHEMA))
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise _fail(directory, f"{LOOKUP_FILE} cannot be read ({exc})") from None
    if len(lookup) != int(info["count"]):
        raise _fail(directory, f"{LOOKUP_FILE} has {len(lookup):,} rows but {INFO_FILE} says {info['count']:,}")
    masked = np.empty(0, dtype=np.int64)
    if info.get("masked_ids_file"):
        try:
            masked = np.load(directory / info["masked_ids_file"], allow_pickle=False).astype(np.int64)
        except (OSError, ValueError) as exc:
            raise _fail(directory, f"{info['masked_ids_file']} cannot be read ({exc})") from None
        if masked.size != int(info.get("masked_count", masked.size)):
            raise _fail(
                directory, f"{info['masked_ids_file']} holds {masked.size} ids, {INFO_FILE} says {info['masked_count']}"
            )
    return IndexDir(directory, index, info, lookup, masked)


def resolve_targets(current: IndexDir, ids: Iterable[int] = (), paths: Iterable[str] = ()) -> np.ndarray:
    """The ids named by ``ids`` and ``paths``; IndexDirError naming any that the index does not hold."""
    ids = [int(i) for i in ids]
    paths = list(paths)
    by_path = current.lookup.path_to_id() if paths else {}
    unknown_paths = [p for p in paths if p not in by_path]
    wanted = np.unique(np.array(ids + [by_path[p] for p in paths if p in by_path], dtype=np.int64))
    unknown_ids = wanted[~current.lookup.contains(wanted)].tolist()
    if unknown_paths or unknown_ids:
        named = [f"path {p!r}" for p in unknown_paths[:3]] + [f"id {i}" for i in unknown_ids[:3]]
        more = len(unknown_paths) + len(unknown_ids) - len(named)
        raise IndexDirError(
            f"{', '.join(named)}{f' and {more} more' if more > 0 else ''} not in the index "
            f"{current.path}; paths are relative to the embedded folder, ids are the dataset's "
            f"`id` column (see {current.path / 'ids.parquet'})"
        )
    return wanted
