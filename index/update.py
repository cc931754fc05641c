"""Grow and shrink an index directory: add a dataset's new and changed rows, remove ids or paths.

``add`` inserts ids the index lacks and replaces ids whose sha256 changed (the embed job's resume makes this the
natural way to grow a collection); ``remove`` deletes ids from index types that can, and masks them in the others
(HNSW, refined PQ). A masked id cannot be stored again, so replacing one in such an index rebuilds it from the
dataset. When the dataset holds every indexed vector, recall@10 is measured again and the search parameters
re-tuned to the target.

In an augmented index (``augment`` in ``index.json``, DBA), an added vector is stored as the weighted sum of
itself and its ``augment - 1`` nearest stored vectors in the current index; the vectors already stored are not
changed (they see the newcomers after a rebuild), and recall@10 is not measured again (its probe would need the
augmented vectors of the whole dataset).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from extractor.errors import AlexfeatError, IndexDirError
from extractor.store import Dataset, load_dataset
from index import ops
from index.build import build_index, index_info, lookup_of
from index.expansion import ALPHA, expand_queries
from index.factory import choose_factory
from index.indexdir import (
    INFO_FILE,
    LOOKUP_COLUMNS,
    IndexDir,
    index_lock,
    open_index_dir,
    resolve_targets,
    write_index_dir,
)
from index.tune import recall_probe, tune

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpdateSummary:
    """What an add or remove changed."""

    added: int = 0
    replaced: int = 0
    removed: int = 0
    unchanged: int = 0
    count: int = 0
    rebuilt: bool = False
    recall_at_10: float | None = None
    seconds: float = 0.0

    def line(self, directory: str | os.PathLike[str]) -> str:
        parts = [
            f"{self.added} added",
            f"{self.replaced} replaced",
            f"{self.removed} removed",
            f"{self.unchanged} unchanged",
        ]
        extra = " (rebuilt: this index type cannot replace vectors)" if self.rebuilt else ""
        recall = f", recall@10 {self.recall_at_10:.3f}" if self.recall_at_10 is not None else ""
        return f"{directory}: {', '.join(parts)}; {self.count:,} vectors{recall}, {self.seconds:.1f} s{extra}"


def add_to_index(
    index_dir: str | os.PathLike[str], emb_dir: str | os.PathLike[str], progress: bool | None = None
) -> UpdateSummary:
    """Add the rows of ``emb_dir`` that ``index_dir`` lacks and replace those whose sha256 changed."""
    start = time.perf_counter()
    index_dir, emb_dir = Path(index_dir), Path(emb_dir)
    with index_lock(index_dir):
        current = open_index_dir(index_dir)
        if current.info.get("storage") == "ondisk":  # FAISS ends the process on an add to a read-only on-disk index
            raise IndexDirError(
                f"{index_dir} is a sharded index merged on disk (index.ivfdata), which is read-only: vectors "
                f"cannot be added to it. Build it again with `alexfeat index build {emb_dir} -o {index_dir} "
                f"--shards {current.info.get('shards', 1)}` (`index remove` works: it masks ids)"
            )
        dataset = load_dataset(emb_dir, columns=LOOKUP_COLUMNS)
        current.meta.check_compatible(
            dataset.meta,
            f"{emb_dir} was embedded with other model settings than the index {index_dir} (index != dataset)",
            hint="Embed the images with the index's model, or build a new index from this dataset",
        )
        if current.meta.root and dataset.meta.root and current.meta.root != dataset.meta.root:
            raise IndexDirError(  # its paths would be read under the index's root, and equal paths share an id
                f"{emb_dir} was embedded from {dataset.meta.root}, the index {index_dir} from {current.meta.root}; "
                f"`index add` takes the index's own dataset after a rerun of `alexfeat embed`. If the images moved, "
                f"build the index again (`alexfeat index build {emb_dir} -o {index_dir}`); for another "
                f"collection, build its own index (`alexfeat index build {emb_dir} -o NEW_INDEX`)"
            )
        pos = current.lookup.positions(dataset.ids)
        known = pos >= 0
        changed = known.copy()
        digests = dataset.get_sha256()
        changed[known] = [
            digests[i] != current.lookup.sha256[p] for i, p in zip(np.flatnonzero(known).tolist(), pos[known].tolist())
        ]
        fresh = ~known
        unchanged = int(known.sum() - changed.sum())
        if not (fresh | changed).any():
            return UpdateSummary(unchanged=unchanged, count=len(current.lookup), seconds=time.perf_counter() - start)
        covered = bool(np.isin(current.lookup.ids, dataset.ids).all())
        stored_again = bool(changed.any() or np.isin(dataset.ids[fresh], current.masked).any())
        if stored_again and current.info.get("removal") == "mask":
            if not covered:
                raise IndexDirError(
                    f"the index type of {index_dir} ({current.info['factory']}) cannot replace "
                    f"vectors, and {emb_dir} lacks some of its rows, so it cannot be rebuilt from "
                    "it; build a new index from a dataset holding all of them"
                )
            info = _rebuild(current, dataset, emb_dir, progress)
            recall: float | None = info["recall_at_10"]
        else:
            info, recall = _add_in_place(current, dataset, fresh | changed, changed, covered, progress)
    return UpdateSummary(
        added=int(fresh.sum()),
        replaced=int(changed.sum()),
        unchanged=unchanged,
        count=info["count"],
        rebuilt=stored_again and current.info.get("removal") == "mask",
        recall_at_10=recall,
        seconds=time.perf_counter() - start,
    )


def _rebuild(current: IndexDir, dataset: Dataset, emb_dir: Path, progress: bool | None) -> dict[str, Any]:
    """Build the index again from ``dataset`` with the settings it was built with (the factory ``auto`` chose
    afresh for the new count)."""
    old = current.info
    built = build_index(
        dataset.get_vectors(),
        dataset.ids,
        old.get("factory_requested", old["factory"]),
        old.get("memory_budget_bytes"),
        old.get("target_recall", 0.95),
        progress=progress,
        augment=int(old.get("augment", 0)),
        alpha=float(old.get("alpha", ALPHA)),
    )
    built.factory_requested = old.get("factory_requested", old["factory"])
    return write_index_dir(current.path, index_info(built, dataset, emb_dir), lookup_of(dataset), built.index)


def _add_in_place(
    current: IndexDir, dataset: Dataset, insert: np.ndarray, changed: np.ndarray, covered: bool, progress: bool | None
) -> tuple[dict[str, Any], float | None]:
    """Remove the changed rows, add the ``insert`` rows, and re-tune when ``dataset`` holds every indexed row."""
    index, info = current.index, dict(current.info)
    if changed.any():
        ops.remove(index, dataset.ids[changed])
    rows, vectors = np.flatnonzero(insert), dataset.get_vectors()
    augment = int(info.get("augment", 0))
    new = vectors[rows]
    if augment > 1:  # against the current index: the stored vectors, the removed and masked ones left out
        k = min(augment - 1, int(index.ntotal) - len(current.masked))
        new = expand_queries(
            index, new, max(k, 0), float(info.get("alpha", ALPHA)), current.search_params, current.masked
        )
    ops.add(index, new, dataset.ids[rows], progress)
    lookup = current.lookup.merged(lookup_of(dataset, rows))
    recall = None
    if augment > 1:
        log.info("recall@10 not measured again: the index is augmented (rebuild it to measure)")
    elif covered:
        live = np.flatnonzero(lookup.contains(dataset.ids))
        probe = recall_probe(vectors[live], dataset.ids[live])
        tuning = tune(index, probe, float(info.get("target_recall", 0.95)), current.masked)
        info.update(
            search_params=tuning.params, recall_at_10=round(tuning.recall, 4), recall_queries=len(probe.queries)
        )
        recall = tuning.recall
    else:
        log.info("recall@10 not measured again: the dataset does not hold every indexed vector")
    info["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _suggest_rebuild(info, len(lookup))
    return write_index_dir(current.path, info, lookup, index, current.masked, current), recall


def _suggest_rebuild(info: dict[str, Any], count: int) -> None:
    """Log a hint when ``auto`` would now choose another index type for the grown collection."""
    if info.get("factory_requested") != "auto":
        return
    try:
        now = choose_factory(count, int(info["dim"]), info.get("memory_budget_bytes")).factory
    except IndexDirError:
        return
    if now not in (info["factory"], info["factory"].removeprefix("IDMap2,")):
        log.warning(
            "the index now holds %d vectors: `--factory auto` would choose %s instead of %s; rebuild it "
            "with `alexfeat index build` for the best speed",
            count,
            now,
            info["factory"],
        )


def remove_from_index(
    index_dir: str | os.PathLike[str],
    ids: Iterable[int] = (),
    paths: Iterable[str] = (),
    targets_file: str | os.PathLike[str] | None = None,
) -> UpdateSummary:
    """Remove ``ids`` and ``paths`` (and those listed in ``targets_file``, see :func:`read_targets`) from the
    index; masked at search time where the type cannot remove."""
    start = time.perf_counter()
    ids, paths = list(ids), list(paths)
    if targets_file is not None:
        more_ids, more_paths = read_targets(targets_file)
        ids, paths = ids + more_ids, paths + more_paths
    index_dir = Path(index_dir)
    with index_lock(index_dir):
        current = open_index_dir(index_dir)
        targets = resolve_targets(current, ids, paths)
        if targets.size == 0:
            raise IndexDirError("name the ids or paths to remove (--id, --path or --from-file)")
        lookup = current.lookup.without(targets)
        info = dict(current.info) | {"updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if info.get("removal") == "mask":
            info = write_index_dir(index_dir, info, lookup, None, np.union1d(current.masked, targets), current)
        else:
            ops.remove(current.index, targets)
            info = write_index_dir(index_dir, info, lookup, current.index, current.masked, current)
    log.info("removed %d ids (%s) from %s", targets.size, info.get("removal"), index_dir / INFO_FILE)
    return UpdateSummary(removed=int(targets.size), count=info["count"], seconds=time.perf_counter() - start)


def read_targets(path: str | os.PathLike[str]) -> tuple[list[int], list[str]]:
    """Ids and paths listed in a file, one a line: digits are an id, anything else a path; '#' starts a comment."""
    ids, paths = [], []
    try:
        lines = Path(path).read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AlexfeatError(f"cannot read {path} ({exc})") from None
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry.isdigit():
            ids.append(int(entry))
        else:
            paths.append(entry)
    return ids, paths
