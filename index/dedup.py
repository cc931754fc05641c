"""Near-duplicate groups: a range search at a cosine threshold, then connected components (union-find).

Up to ``EXACT_MAX`` vectors the range search is exact (brute force); above, an inverted file probes the
``DEDUP_NPROBE`` nearest lists of each vector, which finds near-duplicates (cosine ≥ 0.9 or so sit in the same
or neighbouring lists) at a fraction of the cost.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from extractor.errors import AlexfeatError
from extractor.store import load_dataset
from extractor.util.atomic import write_text_atomic
from extractor.util.progress import Progress
from extractor.util.textsafe import csv_text, text_cell
from index.factory import EXACT_MAX, ivf_nlist, training_size

BATCH = 4_096
DEDUP_NPROBE = 16


@dataclass(frozen=True)
class DedupReport:
    """Groups of near-duplicates (each a list of (id, path), sorted by path; largest groups first)."""

    groups: list[list[tuple[int, str]]]
    count: int
    threshold: float

    @property
    def duplicates(self) -> int:
        """Images beyond the first of each group: what deleting duplicates would free."""
        return sum(len(g) - 1 for g in self.groups)

    def summary(self, out: str | os.PathLike[str] | None = None) -> str:
        where = f" -> {out}" if out is not None else ""
        return (
            f"dedup: near-duplicate groups: {len(self.groups)} ({sum(map(len, self.groups))} images, "
            f"{self.duplicates} redundant) among {self.count:,} images at cosine >= {self.threshold}{where}"
        )


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _range_index(vectors: np.ndarray, exact_max: int) -> faiss.Index:
    n, dim = vectors.shape
    index: faiss.Index
    if n <= exact_max:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = ivf_nlist(n)
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, training_size(n, f"IVF{nlist},Flat"), replace=False)
        index.train(vectors[np.sort(sample)])
        faiss.extract_index_ivf(index).nprobe = DEDUP_NPROBE
    index.add(vectors)
    return index


def duplicate_groups(
    vectors: np.ndarray, threshold: float = 0.95, exact_max: int = EXACT_MAX, progress: bool | None = None
) -> list[np.ndarray]:
    """Row numbers of each group of vectors linked by cosine ≥ ``threshold`` (directly or through others);
    groups of two or more, largest first."""
    if not 0.0 < threshold <= 1.0:
        raise AlexfeatError(f"--threshold must be a cosine similarity in (0, 1], got {threshold}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 2:
        return []
    index = _range_index(x, exact_max)
    radius = float(np.nextafter(np.float32(threshold), np.float32(-1)))  # FAISS keeps scores > radius
    sets = _UnionFind(n)
    with Progress(n if n > BATCH else 0, "dedup", enabled=progress, unit="img") as bar:
        for start in range(0, n, BATCH):
            lims, _, found = index.range_search(x[start : start + BATCH], radius)
            lims = lims.astype(np.int64)
            rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims))
            for a, b in zip(rows[rows < found].tolist(), found[rows < found].tolist()):
                sets.union(a, b)
            bar.update(len(lims) - 1)
    roots = np.array([sets.find(i) for i in range(n)])
    _, inverse, sizes = np.unique(roots, return_inverse=True, return_counts=True)
    members = np.argsort(inverse, kind="stable")
    groups = np.split(members, np.cumsum(sizes)[:-1])
    return sorted((g for g in groups if len(g) > 1), key=len, reverse=True)


def dedup_dataset(
    emb_dir: str | os.PathLike[str],
    threshold: float = 0.95,
    progress: bool | None = None,
    out: str | os.PathLike[str] | None = None,
) -> DedupReport:
    """Near-duplicate groups of an embeddings dataset, as (id, path) lists sorted by path; also written to
    ``out`` (.json or .csv, see :func:`write_report`) when given."""
    if out is not None:
        output_format(out)  # a bad extension fails before the search
    dataset = load_dataset(emb_dir, columns=("id", "path"))
    groups = []
    paths = dataset.get_paths()
    for rows in duplicate_groups(dataset.get_vectors(), threshold, progress=progress):
        groups.append(sorted(((int(dataset.ids[r]), paths[r]) for r in rows.tolist()), key=lambda m: m[1]))
    groups.sort(key=lambda g: (-len(g), g[0][1]))
    report = DedupReport(groups, len(dataset), threshold)
    if out is not None:
        write_report(report, out)
    return report


def group_lines(report: DedupReport) -> list[str]:
    """One line per group for a terminal: ``group N (SIZE): PATH  PATH ...``, names escaped (``text_cell``)."""
    return [
        f"group {number} ({len(group)}): " + "  ".join(text_cell(path) for _, path in group)
        for number, group in enumerate(report.groups, 1)
    ]


def output_format(out: str | os.PathLike[str]) -> str:
    """``json`` or ``csv`` from the output file's extension; AlexfeatError for anything else."""
    suffix = Path(out).suffix.lower()
    if suffix not in (".json", ".csv"):
        raise AlexfeatError(f"cannot tell the format of {out}: name it .json or .csv")
    return suffix[1:]


def write_report(report: DedupReport, out: str | os.PathLike[str]) -> None:
    """Write the groups as JSON (a list of groups, each a list of {"id", "path"}) or CSV (group, id, path),
    chosen by the file's extension."""
    out = Path(out)
    if output_format(out) == "json":
        text = json.dumps([[{"id": i, "path": p} for i, p in group] for group in report.groups], indent=1) + "\n"
    else:
        text = csv_text(
            ["group", "id", "path"], ([g, i, p] for g, group in enumerate(report.groups, 1) for i, p in group)
        )
    try:
        write_text_atomic(out, text)
    except OSError as exc:
        raise AlexfeatError(f"cannot write {out} ({exc.strerror}); choose a writable place") from None
