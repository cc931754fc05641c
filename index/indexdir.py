"""The index directory on disk: generations of files switched by one atomic rename of ``index.json``.

::

    index.json        the manifest: factory, metric, dim, count, search_params, recall_at_10, build_seconds,
                      embedding_metadata, the bookkeeping below (file sizes, removal mode, phases), ``augment``
                      and ``alpha`` (database-side augmentation, see index.expansion) and ``generation``, the
                      folder that holds the index's files
    gen-000007/       the current generation (written in full, fsync'ed, before index.json names it):
        index.faiss     the FAISS index, keyed by the dataset's ids; ``faiss.read_index`` opens it as it is
        ids.parquet     id, path, label, sha256 of every searchable vector, sorted by id
        masked_ids.npy  ids removed from an index type that cannot remove them (never returned by a search)
        index.ivfdata   the inverted lists of a sharded build merged on disk (``storage: ondisk``), read in place,
                        read-only, by ``index.faiss`` of the same folder
    index.faiss, ids.parquet   symbolic links to the current generation's files, for plain FAISS / Parquet users
                               (and index.ivfdata beside them for a merged index)
    .alexfeat.lock    the one-writer lock of ``index build/add/remove``

A writer (holding the lock) writes the next generation beside the current one, then replaces ``index.json``
atomically: that rename is the switch, so a reader sees the old index or the new one, never a mix, and a writer
killed at any point leaves the old index answering. The writer then refreshes the links and deletes the older
generations; the next writer deletes whatever a killed one left. ``index.json`` records the size of each file, so
a cut-short or foreign file is told apart from a good one. A directory written before generations existed (the
files beside ``index.json``, no ``generation`` key) is read as it is and moved to a generation by its next write.

Tests make a writer die at a chosen point: with ``ALEXFEAT_INDEX_CRASH_AFTER=NAME`` (one of the file names above)
the writer SIGKILLs itself right after writing that file. Nothing else reads the variable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
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
from extractor.network.spec import EmbeddingMeta
from extractor.store import dataset_lock, list_parts, row_schema
from extractor.util.atomic import fsync_path, write_text_atomic
from index.ops import faiss_reason

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: files in generation folders named by index.json
INDEX_FILE = "index.faiss"
INFO_FILE = "index.json"
LOOKUP_FILE = "ids.parquet"
MASKED_FILE = "masked_ids.npy"
IVFDATA_FILE = "index.ivfdata"
"""The inverted lists of a merged (sharded, on-disk) index, beside its ``index.faiss``; ``index.json`` then has
``"storage": "ondisk"``."""
CRASH_ENV = "ALEXFEAT_INDEX_CRASH_AFTER"
GENERATION_FILES = frozenset({INDEX_FILE, LOOKUP_FILE, MASKED_FILE, IVFDATA_FILE})
_GEN_NAME = re.compile(r"gen-(\d{6,})")
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
LOOKUP_COLUMNS = ("id", "path", "label", "sha256")  # of every searchable vector, from its dataset row
LOOKUP_SCHEMA = row_schema(LOOKUP_COLUMNS)


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
    def files_dir(self) -> Path:
        """The folder of this generation's files (``index.faiss``, ``ids.parquet``, ``masked_ids.npy``)."""
        return generation_dir(self.path, self.info)

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    @property
    def meta(self) -> EmbeddingMeta:
        try:
            return EmbeddingMeta.from_dict(self.info["embedding_metadata"], where=str(self.path / INFO_FILE))
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
        if not n.startswith(".")
        and n not in (INDEX_FILE, INFO_FILE, LOOKUP_FILE, MASKED_FILE, IVFDATA_FILE)
        and not _is_generation(directory / n)
    ]
    if foreign and not (directory / INFO_FILE).exists():
        raise IndexDirError(
            f"{directory} is not empty and holds no alexfeat index ({', '.join(foreign[:3])}); "
            "choose a new or empty directory"
        )
    return directory


def _gen_number(name: str) -> int:
    """The number of a generation folder's name (``gen-000007`` → 7); 0 for any other name."""
    match = _GEN_NAME.fullmatch(name)
    return int(match.group(1)) if match else 0


def _crash_point(name: str) -> None:
    """The test hook: die like ``kill -9`` right after writing ``name`` when ALEXFEAT_INDEX_CRASH_AFTER names it."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def index_lock(directory: Path) -> Iterator[None]:
    """Hold the one-writer lock of an index directory (IndexDirError if another job holds it); on taking it,
    delete what a killed writer left."""
    if not directory.is_dir():
        raise IndexDirError(
            f"index directory {directory} does not exist; build it with `alexfeat index build EMB_DIR -o {directory}`"
        )
    with dataset_lock(directory):
        tidy_index_dir(directory)
        yield


def tidy_index_dir(directory: Path) -> None:
    """Delete the generations ``index.json`` does not name and point the links at the one it names (the caller
    holds the lock). An unreadable ``index.json`` leaves everything as it is."""
    try:
        info = json.loads((directory / INFO_FILE).read_text("utf-8"))
    except FileNotFoundError:
        info = {}  # a first build killed before its switch
    except (OSError, ValueError):
        return
    gen = info.get("generation") if isinstance(info, dict) else None
    keep = gen if isinstance(gen, str) and _gen_number(gen) else None
    if isinstance(info, dict):
        _remove_generations(directory, keep)
    if keep is not None:
        _point_links(directory, keep)


def _point_links(directory: Path, gen: str) -> None:
    """The links ``index.faiss`` and ``ids.parquet`` (and ``index.ivfdata`` of a merged index) at ``gen``'s files;
    no single-generation masked file left."""
    ondisk = (directory / gen / IVFDATA_FILE).exists()
    for name in (INDEX_FILE, LOOKUP_FILE) + ((IVFDATA_FILE,) if ondisk else ()):
        link = directory / name
        if not link.is_symlink() or os.readlink(link) != f"{gen}/{name}":
            _link(directory, name, f"{gen}/{name}")
    if not ondisk and (directory / IVFDATA_FILE).is_symlink():
        (directory / IVFDATA_FILE).unlink()
    with contextlib.suppress(FileNotFoundError):
        (directory / MASKED_FILE).unlink()


def _is_generation(path: Path) -> bool:
    """Whether ``path`` is a generation folder this module wrote: the name, and nothing inside but its files."""
    if not _gen_number(path.name) or path.is_symlink() or not path.is_dir():
        return False
    try:
        return all(name in GENERATION_FILES for name in os.listdir(path))
    except OSError:
        return False


def _remove_generations(directory: Path, keep: str | None) -> None:
    """Delete every generation folder but ``keep`` (those of earlier writes, or left by a killed writer)."""
    for entry in os.listdir(directory):
        if entry != keep and _is_generation(directory / entry):
            shutil.rmtree(directory / entry, ignore_errors=True)


def _link(directory: Path, name: str, target: str) -> None:
    """Point the convenience link ``directory/name`` at ``target`` (relative), replacing what was there."""
    tmp = directory / f".{name}.link.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.symlink(target, tmp)
        os.replace(tmp, directory / name)
    except OSError as exc:  # a file system without links: the files are still in the generation folder
        log.debug("no link %s -> %s (%s)", name, target, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def _write_generation(
    gen_dir: Path,
    lookup: Lookup,
    index: faiss.Index | None,
    previous: Path | None,
    masked: np.ndarray,
    ivfdata: Path | None = None,
) -> None:
    """Write (or, for ``index=None``, hard-link from ``previous``, with its ``index.ivfdata`` if any) the files of a
    generation, each fsync'ed; ``ivfdata``, the merged lists of a new on-disk index, is moved in."""
    gen_dir.mkdir()
    target = gen_dir / INDEX_FILE
    if index is not None:
        if ivfdata is not None:
            os.replace(ivfdata, gen_dir / IVFDATA_FILE)
            fsync_path(gen_dir / IVFDATA_FILE)
        faiss.write_index(index, str(target))
    else:
        if previous is None or not previous.is_file():
            raise IndexDirError(f"{gen_dir.parent}: the current {INDEX_FILE} is missing; rebuild the index")
        for source in (previous, previous.with_name(IVFDATA_FILE)):
            if source.name == INDEX_FILE or source.exists():
                try:
                    os.link(source, gen_dir / source.name)  # a generation's files never change: sharing is safe
                except OSError:
                    shutil.copyfile(source, gen_dir / source.name)
    fsync_path(target)
    _crash_point(INDEX_FILE)
    pq.write_table(lookup.to_table(), gen_dir / LOOKUP_FILE, compression="zstd", write_page_checksum=True)
    fsync_path(gen_dir / LOOKUP_FILE)
    _crash_point(LOOKUP_FILE)
    if masked.size:
        with open(gen_dir / MASKED_FILE, "wb") as fh:
            np.save(fh, masked)
        fsync_path(gen_dir / MASKED_FILE)
        _crash_point(MASKED_FILE)
    fsync_path(gen_dir)


def write_index_dir(
    directory: Path,
    info: dict[str, Any],
    lookup: Lookup,
    index: faiss.Index | None = None,
    masked: np.ndarray | None = None,
    previous: IndexDir | None = None,
    ivfdata: Path | None = None,
) -> dict[str, Any]:
    """Write the next generation of the directory and switch to it; ``index=None`` keeps ``previous``'s index.
    ``ivfdata``: the file of a merged on-disk ``index``'s lists, moved into the generation as ``index.ivfdata``.

    The caller holds the directory's lock. Fills in the bookkeeping keys of ``info`` (count, file sizes, masked
    count, generation) and returns it.
    """
    masked = np.unique(np.asarray(masked if masked is not None else [], dtype=np.int64))
    gen_dir, switched = None, False
    try:
        tidy_index_dir(directory)  # a killed writer's leftovers
        number = max([_gen_number(n) for n in os.listdir(directory)] + [0]) + 1
        gen = f"gen-{number:06d}"
        gen_dir = directory / gen
        old_index = previous.files_dir / INDEX_FILE if previous is not None else None
        _write_generation(gen_dir, lookup, index, old_index, masked, ivfdata)
        if index is not None:
            info["ntotal"] = int(index.ntotal)
        info.update(
            count=len(lookup),
            masked_count=int(masked.size),
            masked_ids_file=MASKED_FILE if masked.size else None,
            format_version=FORMAT_VERSION,
            generation=gen,
            files={
                name: (gen_dir / name).stat().st_size
                for name in (INDEX_FILE, LOOKUP_FILE, IVFDATA_FILE)
                if name != IVFDATA_FILE or (gen_dir / name).exists()
            },
        )
        ordered = {key: info[key] for key in REQUIRED_KEYS} | info  # the docs/design.md keys first
        write_text_atomic(directory / INFO_FILE, json.dumps(ordered, indent=2) + "\n")  # the switch
        switched = True
        fsync_path(directory)
        _crash_point(INFO_FILE)
        _point_links(directory, gen)
        _remove_generations(directory, gen)
    except (OSError, RuntimeError) as exc:
        raise IndexDirError(f"cannot write the index to {directory} ({exc}); check the space and permissions") from None
    finally:
        if gen_dir is not None and not switched:  # a failed write (disk full) leaves the directory as it was
            shutil.rmtree(gen_dir, ignore_errors=True)
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
        if list_parts(directory):  # the embeddings given where their index was meant
            raise IndexDirError(
                f"{directory} is an embeddings dataset, not an index: build its index with `alexfeat index build "
                f"{directory} -o INDEX_DIR` and give INDEX_DIR"
            ) from None
        raise _fail(directory, f"{INFO_FILE} is missing") from None
    except (OSError, ValueError) as exc:
        raise _fail(directory, f"{INFO_FILE} cannot be read ({exc})") from None
    if not isinstance(info, dict):
        raise _fail(directory, f"{INFO_FILE} is not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in info]
    if missing:
        raise _fail(directory, f"{INFO_FILE} lacks {', '.join(missing)}")
    try:
        version = int(info.get("format_version", 1))
    except (TypeError, ValueError):
        raise _fail(directory, f"{INFO_FILE} has an unreadable format_version") from None
    if version > FORMAT_VERSION:
        raise IndexDirError(
            f"{directory} was written by a newer alexfeat (index format {info['format_version']}); "
            "upgrade alexfeat to read it"
        )
    gen = info.get("generation")
    if gen is not None and not (isinstance(gen, str) and _gen_number(gen)):
        raise _fail(directory, f"{INFO_FILE} names an invalid generation {gen!r}")
    return info


def generation_dir(directory: str | os.PathLike[str], info: dict[str, Any]) -> Path:
    """The folder holding the files ``info`` describes: its generation, or the directory itself (format 1)."""
    gen = info.get("generation")
    return Path(directory) / gen if gen else Path(directory)


def _checked_size(directory: Path, base: Path, name: str, info: dict[str, Any]) -> Path:
    path = base / name
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
    """Open and check an index directory: every file present, complete and consistent with ``index.json``.

    A writer may switch generations while the files are read; the read then starts again on the new one.
    """
    directory = Path(directory)
    for attempt in range(3):
        info = read_info(directory)
        try:
            return _open_generation(directory, info)
        except IndexDirError:
            if attempt == 2 or read_info(directory).get("generation") == info.get("generation"):
                raise
    raise AssertionError("unreachable")


def _open_generation(directory: Path, info: dict[str, Any]) -> IndexDir:
    base = generation_dir(directory, info)
    index_path = _checked_size(directory, base, INDEX_FILE, info)
    flags = 0
    if info.get("storage") == "ondisk":  # its lists are in index.ivfdata beside it, wherever the directory now is
        _checked_size(directory, base, IVFDATA_FILE, info)
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
    lookup_path = _checked_size(directory, base, LOOKUP_FILE, info)
    try:
        table = pq.ParquetFile(lookup_path, page_checksum_verification=True).read(use_threads=False)
        lookup = Lookup.from_table(table.select(LOOKUP_SCHEMA.names).cast(LOOKUP_SCHEMA))
    except (OSError, pa.ArrowException, KeyError, ValueError) as exc:
        raise _fail(directory, f"{LOOKUP_FILE} cannot be read ({exc})") from None
    if len(lookup) != int(info["count"]):
        raise _fail(directory, f"{LOOKUP_FILE} has {len(lookup):,} rows but {INFO_FILE} says {info['count']:,}")
    masked = np.empty(0, dtype=np.int64)
    if info.get("masked_ids_file"):
        name = str(info["masked_ids_file"])
        try:
            masked = np.load(base / Path(name).name, allow_pickle=False).astype(np.int64)
        except (OSError, ValueError) as exc:
            raise _fail(directory, f"{name} cannot be read ({exc})") from None
        if masked.size != int(info.get("masked_count", masked.size)):
            raise _fail(directory, f"{name} holds {masked.size} ids, {INFO_FILE} says {info['masked_count']}")
    return IndexDir(directory, index, info, lookup, masked)


ID_MIN, ID_MAX = -(2**63), 2**63 - 1  # the dataset's ids are int64


def as_ids(values: Iterable[int]) -> np.ndarray:
    """``values`` as int64 ids; IndexDirError for one that no int64 id can equal."""
    ids = [int(v) for v in values]
    outside = [i for i in ids if not ID_MIN <= i <= ID_MAX]
    if outside:
        raise IndexDirError(
            f"id {outside[0]} is out of range: ids are 64-bit integers from the dataset's `id` column "
            f"({ID_MIN} to {ID_MAX})"
        )
    return np.asarray(ids, dtype=np.int64)


def resolve_targets(current: IndexDir, ids: Iterable[int] = (), paths: Iterable[str] = ()) -> np.ndarray:
    """The ids named by ``ids`` and ``paths``; IndexDirError naming any that the index does not hold."""
    given: list[int] = as_ids(ids).tolist()
    paths = list(paths)
    by_path = current.lookup.path_to_id() if paths else {}
    unknown_paths = [p for p in paths if p not in by_path]
    wanted = np.unique(np.array(given + [by_path[p] for p in paths if p in by_path], dtype=np.int64))
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
