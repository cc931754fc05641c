"""What a rerun of ``alexfeat embed`` must do: which files to embed, which old rows to drop.

Rules (docs/design.md): a file whose path is in the dataset with the same size and mtime (the change token: an
object's is derived from its listing) is unchanged. With another
size it changed (bytes of another length cannot have the same sha256, so it is not hashed); with the same size
and another mtime its sha256 decides: the same content keeps its row (and the row's size/mtime are refreshed, so
the file is not hashed again next time), other content is embedded again and its old row dropped. New paths are
embedded. Rows of files that vanished stay unless ``prune``.

Files that failed before (``_errors.parquet``) are retried only when their size or mtime changed (or with
``retry_errors``, e.g. after raising ``--max-pixels``): a broken file stays broken, and retrying thousands of
them on every run would waste the run. Records without a size (folders that could not be listed) are dropped on
every run: the walk records them again while they stay unreadable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from extractor.images.sources import entry_sha256
from extractor.store import Dataset, DatasetWriter, list_parts, load_dataset

if TYPE_CHECKING:
    from extractor.images.discover import FileEntry

RESUME_COLUMNS = ("id", "path", "sha256", "size", "mtime_ns")
HASH_THREADS = 4


@dataclass
class ResumePlan:
    """The work of a rerun; ``to_embed`` keeps the order of the entries given."""

    to_embed: list[FileEntry] = field(default_factory=list)
    unchanged: int = 0  # files whose row stays (including ``touched``)
    drop_ids: list[int] = field(default_factory=list)  # rows to remove: changed files, and vanished ones with prune
    vanished: int = 0  # rows whose file is gone (dropped only with prune)
    new: int = 0  # paths not in the dataset (including retried errors)
    changed: int = 0  # files whose content changed: embedded again, old row dropped
    touched: int = 0  # mtime changed, same sha256: row kept, its size/mtime refreshed through ``stats_updates``
    stats_updates: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (size, mtime_ns) for touched rows
    skipped_errors: int = 0  # failed before and unchanged since: not retried
    stale_error_paths: list[str] = field(default_factory=list)  # records of vanished files (with prune), folders


def load_existing(out_dir: str | os.PathLike[str]) -> Dataset | None:
    """The columns a plan needs from an existing dataset (no embeddings), or None when it has no parts yet."""
    if not list_parts(out_dir):
        return None
    return load_dataset(out_dir, columns=RESUME_COLUMNS, embeddings=False)


def plan_resume(
    entries: Iterable[FileEntry],
    existing: Dataset | None,
    prune: bool,
    hash_entry: Callable[[FileEntry], bytes] = entry_sha256,
    errors: pa.Table | None = None,
    retry_errors: bool = False,
) -> ResumePlan:
    """Compare the files found now (``entries``, from any source) with the dataset's rows and the earlier error
    records; ``hash_entry`` reads a file whose size is the same and change token is not (through its source)."""
    plan = ResumePlan()
    rows: dict[str, int] = {}
    ids = sizes = mtimes = np.empty(0, np.int64)
    digests: list[bytes] = []
    if existing is not None:  # read with RESUME_COLUMNS
        ids, sizes, mtimes, digests = existing.ids, existing.get_size(), existing.get_mtime_ns(), existing.get_sha256()
        rows = {path: i for i, path in enumerate(existing.get_paths())}
    failed: dict[str, tuple[int | None, int | None]] = {}
    if errors is not None and errors.num_rows:
        failed = dict(
            zip(
                errors.column("path").to_pylist(),
                zip(errors.column("size").to_pylist(), errors.column("mtime_ns").to_pylist()),
            )
        )

    seen: set[str] = set()
    candidates: list[FileEntry] = []  # to embed, or to hash first; in entry order
    to_hash: list[tuple[FileEntry, int]] = []
    for entry in entries:
        seen.add(entry.path)
        row = rows.get(entry.path)
        if row is None:
            if not retry_errors and failed.get(entry.path) == (entry.size, entry.mtime_ns):
                plan.skipped_errors += 1
                continue
            plan.new += 1
            candidates.append(entry)
        elif int(sizes[row]) == entry.size and int(mtimes[row]) == entry.mtime_ns:
            plan.unchanged += 1
        elif int(sizes[row]) != entry.size:
            _changed(plan, int(ids[row]))
            candidates.append(entry)
        else:
            to_hash.append((entry, row))
            candidates.append(entry)

    kept: set[str] = set()
    for (entry, row), digest in zip(to_hash, _hash_all([e for e, _ in to_hash], hash_entry)):
        if digest is not None and digest == digests[row]:
            plan.touched += 1
            plan.unchanged += 1
            plan.stats_updates[int(ids[row])] = (entry.size, entry.mtime_ns)
            kept.add(entry.path)
        else:  # other content, or unreadable now (decoding will record the error)
            _changed(plan, int(ids[row]))
    plan.to_embed = [entry for entry in candidates if entry.path not in kept]

    for path, row in rows.items():
        if path not in seen:
            plan.vanished += 1
            if prune:
                plan.drop_ids.append(int(ids[row]))
    plan.stale_error_paths = [
        path for path, (size, _) in failed.items() if path not in seen and (prune or size is None)
    ]
    return plan


def apply_plan(writer: DatasetWriter, plan: ResumePlan) -> None:
    """Carry out a plan's changes to existing rows and errors before its files are embedded."""
    writer.drop_ids(plan.drop_ids)
    writer.update_file_stats(plan.stats_updates)
    writer.drop_errors(plan.stale_error_paths)


def _changed(plan: ResumePlan, row_id: int) -> None:
    plan.changed += 1
    plan.drop_ids.append(row_id)


def _hash_all(entries: list[FileEntry], hash_entry: Callable[[FileEntry], bytes]) -> list[bytes | None]:
    """sha256 of each entry (None where it cannot be read), a few at a time (hashlib releases the GIL)."""

    def one(entry: FileEntry) -> bytes | None:
        try:
            return hash_entry(entry)
        except OSError:
            return None

    if len(entries) < 2:
        return [one(entry) for entry in entries]
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        return list(pool.map(one, entries))
