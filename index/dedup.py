"""Near-duplicate groups: candidate pairs from the embeddings, verified on the images, then connected components.

1. Candidates: each image's ``CANDIDATE_NEIGHBOURS`` nearest neighbours by embedding cosine, kept at cosine ≥
   ``CANDIDATE_COSINE`` (exact up to ``EXACT_MAX`` vectors; above, an inverted file probing ``DEDUP_NPROBE``
   lists). An embedding says what a photo shows, so this finds copies and lookalikes alike (on the dev set,
   different photos of one class reach cosine 0.98 while a 90 % crop can fall to 0.83).
2. Verification (:mod:`index.verify`): the pixels of the two images at their best alignment; pairs scoring at
   least ``threshold`` are copies.
3. Groups: connected components of the verified pairs (union-find); each member carries its score to the group's
   first member (sorted by path).

``verify=False`` skips step 2 and links pairs at embedding cosine ≥ ``threshold`` by range search (the images are
not needed, but lookalikes are grouped too).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

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
DEFAULT_THRESHOLD = 0.96  # verified score, calibrated with scripts/bench_dedup.py
UNVERIFIED_THRESHOLD = 0.95  # embedding cosine, without verification
CANDIDATE_COSINE = 0.75
CANDIDATE_NEIGHBOURS = 32


class Member(NamedTuple):
    """A group member: the dataset's id and path, and its score to the group's first member (1.0 for the first)."""

    id: int
    path: str
    score: float


@dataclass(frozen=True)
class DedupReport:
    """Groups of near-duplicates (members sorted by path; largest groups first) and how they were found."""

    groups: list[list[Member]]
    count: int
    threshold: float
    verified: bool = True
    candidates: int = 0  # candidate pairs checked on the images
    unreadable: dict[str, str] = field(default_factory=dict)  # images that could not be verified: path -> why

    @property
    def duplicates(self) -> int:
        """Images beyond the first of each group: what deleting duplicates would free."""
        return sum(len(g) - 1 for g in self.groups)

    def summary(self, out: str | os.PathLike[str] | None = None) -> str:
        where = f" -> {out}" if out is not None else ""
        how = (
            f"verified score >= {self.threshold} ({self.candidates:,} candidate pairs checked on the images"
            + (f", {len(self.unreadable)} images unreadable" if self.unreadable else "")
            + ")"
            if self.verified
            else f"embedding cosine >= {self.threshold} (not verified on the images: lookalikes are grouped too)"
        )
        return (
            f"dedup: near-duplicate groups: {len(self.groups)} ({sum(map(len, self.groups))} images, "
            f"{self.duplicates} redundant) among {self.count:,} images at {how}{where}"
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


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise AlexfeatError(f"--threshold must be a similarity in (0, 1], got {threshold}")


def linked_groups(n: int, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Row numbers of each connected component of the edges (a[i], b[i]) with two or more members, largest first."""
    sets = _UnionFind(n)
    for i, j in zip(a.tolist(), b.tolist()):
        sets.union(i, j)
    roots = np.array([sets.find(i) for i in range(n)])
    _, inverse, sizes = np.unique(roots, return_inverse=True, return_counts=True)
    members = np.argsort(inverse, kind="stable")
    groups = np.split(members, np.cumsum(sizes)[:-1])
    return sorted((g for g in groups if len(g) > 1), key=len, reverse=True)


def duplicate_groups(
    vectors: np.ndarray, threshold: float = 0.95, exact_max: int = EXACT_MAX, progress: bool | None = None
) -> list[np.ndarray]:
    """Row numbers of each group of vectors linked by cosine ≥ ``threshold`` (directly or through others);
    groups of two or more, largest first (no verification: lookalikes are linked as well as copies)."""
    _check_threshold(threshold)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 2:
        return []
    index = _range_index(x, exact_max)
    radius = float(np.nextafter(np.float32(threshold), np.float32(-1)))  # FAISS keeps scores > radius
    edges_a, edges_b = [], []
    with Progress(n if n > BATCH else 0, "dedup", enabled=progress, unit="img") as bar:
        for start in range(0, n, BATCH):
            lims, _, found = index.range_search(x[start : start + BATCH], radius)
            lims = lims.astype(np.int64)
            rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims))
            edges_a.append(rows[rows < found])
            edges_b.append(found[rows < found])
            bar.update(len(lims) - 1)
    return linked_groups(n, np.concatenate(edges_a), np.concatenate(edges_b))


def candidate_pairs(
    vectors: np.ndarray,
    min_cosine: float = CANDIDATE_COSINE,
    neighbours: int = CANDIDATE_NEIGHBOURS,
    exact_max: int = EXACT_MAX,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of rows (a < b) where one is among the other's ``neighbours`` nearest at cosine ≥ ``min_cosine``:
    (a, b, cosine), each pair once."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 2:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32)
    index = _range_index(x, exact_max)
    k = min(neighbours + 1, n)
    found_a, found_b, found_s = [], [], []
    with Progress(n if n > BATCH else 0, "candidates", enabled=progress, unit="img") as bar:
        for start in range(0, n, BATCH):
            sims, ids = index.search(x[start : start + BATCH], k)
            bar.update(len(ids))
            rows = np.repeat(np.arange(start, start + len(ids)), k)
            ids, sims = ids.ravel(), sims.ravel()
            keep = (ids >= 0) & (ids != rows) & (sims >= min_cosine)
            found_a.append(np.minimum(rows[keep], ids[keep]))
            found_b.append(np.maximum(rows[keep], ids[keep]))
            found_s.append(sims[keep])
    a, b, s = np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_s)
    _, first = np.unique(a * n + b, return_index=True)
    return a[first], b[first], s[first]


def dedup_dataset(
    emb_dir: str | os.PathLike[str],
    threshold: float | None = None,
    progress: bool | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    verify: bool = True,
    images_root: str | os.PathLike[str] | None = None,
    candidate_cosine: float = CANDIDATE_COSINE,
) -> DedupReport:
    """Near-duplicate groups of an embeddings dataset; also written to ``out`` (.json or .csv, see
    :func:`write_report`) when given.

    With ``verify`` (the default) candidate pairs from the embeddings are checked on the images (found under the
    root recorded in the dataset, or ``images_root``): pairs scoring ``threshold`` (default ``DEFAULT_THRESHOLD``)
    or more are copies. Without, pairs at embedding cosine ≥ ``threshold`` (default ``UNVERIFIED_THRESHOLD``) are
    linked. Each member's score to its group's first is the verified score (or the cosine).
    """
    from index.verify import PairVerifier
    from index.verify import images_root as find_images_root

    if out is not None:
        output_format(out)  # a bad extension fails before the search
    if threshold is None:
        threshold = DEFAULT_THRESHOLD if verify else UNVERIFIED_THRESHOLD
    _check_threshold(threshold)
    dataset = load_dataset(emb_dir, columns=("id", "path"))
    paths, vectors = dataset.get_paths(), dataset.get_vectors()
    verifier = None
    candidates = 0
    if verify:
        root = find_images_root(dataset.meta.root, images_root, or_else="dedup without the images: --no-verify")
        verifier = PairVerifier(root, paths)
        a, b, _ = candidate_pairs(vectors, candidate_cosine, progress=progress)
        candidates = len(a)
        scores = verifier.scores(a, b, progress)
        linked = scores >= threshold  # NaN (an unreadable image) is never linked
        rows = linked_groups(len(paths), a[linked], b[linked])
    else:
        rows = duplicate_groups(vectors, threshold, progress=progress)
    groups = []
    for members in rows:
        ordered = sorted(members.tolist(), key=lambda r: paths[r])
        first, rest = ordered[0], np.array(ordered[1:], dtype=np.int64)
        if verifier is not None:
            to_first = verifier.scores(np.full(len(rest), first), rest)
        else:
            to_first = vectors[rest] @ vectors[first]
        groups.append(
            [Member(int(dataset.ids[first]), paths[first], 1.0)]
            + [
                Member(int(dataset.ids[r]), paths[r], round(float(s), 4))
                for r, s in zip(rest.tolist(), to_first.tolist())
            ]
        )
    groups.sort(key=lambda g: (-len(g), g[0].path))
    unreadable = dict(verifier.unreadable) if verifier is not None else {}
    report = DedupReport(groups, len(paths), threshold, verify, candidates, unreadable)
    if out is not None:
        write_report(report, out)
    return report


def group_lines(report: DedupReport) -> list[str]:
    """One line per group for a terminal: ``group N (SIZE): FIRST  PATH (SCORE) ...``, each member after the
    first with its score to it; names escaped (``text_cell``)."""
    return [
        f"group {number} ({len(group)}): "
        + "  ".join([text_cell(group[0].path)] + [f"{text_cell(m.path)} ({m.score:.3f})" for m in group[1:]])
        for number, group in enumerate(report.groups, 1)
    ]


def output_format(out: str | os.PathLike[str]) -> str:
    """``json`` or ``csv`` from the output file's extension; AlexfeatError for anything else."""
    suffix = Path(out).suffix.lower()
    if suffix not in (".json", ".csv"):
        raise AlexfeatError(f"cannot tell the format of {out}: name it .json or .csv")
    return suffix[1:]


def write_report(report: DedupReport, out: str | os.PathLike[str]) -> None:
    """Write the groups as JSON (a list of groups, each a list of {"id", "path", "score"}) or CSV (group, id, path,
    score), chosen by the file's extension; ``score`` is each member's score to its group's first (1 for it)."""
    out = Path(out)
    if output_format(out) == "json":
        text = json.dumps([[m._asdict() for m in group] for group in report.groups], indent=1) + "\n"
    else:
        text = csv_text(
            ["group", "id", "path", "score"],
            ([g, m.id, m.path, m.score] for g, group in enumerate(report.groups, 1) for m in group),
        )
    try:
        write_text_atomic(out, text)
    except OSError as exc:
        raise AlexfeatError(f"cannot write {out} ({exc.strerror}); choose a writable place") from None
