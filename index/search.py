"""Query an index directory by vector, id, path or image file; results carry the dataset's id, path and label.

An image query is decoded and embedded with exactly the model settings recorded in the index (its embedding
metadata), so it lands in the same space as the indexed vectors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from extractor.errors import AlexfeatError, IndexDirError
from extractor.images.sources import is_url
from index import ops
from index.indexdir import IndexDir, open_index_dir, resolve_targets

TIE = 1e-5  # scores this close are equal: float rounding, not similarity, orders them
TIE_SLACK = 16  # extra results fetched for a query by id, so the item is found among its exact duplicates


@dataclass(frozen=True)
class Hit:
    """One neighbour: its rank (1 = nearest), the dataset's id, path and label, and the cosine similarity."""

    rank: int
    id: int
    path: str
    label: str | None
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.id, "path": self.path, "label": self.label, "score": round(self.score, 6)}


@dataclass(frozen=True)
class QueryResult:
    """A query (``{"id", "path"}`` of an indexed item or ``{"image"}`` of a file) and its neighbours."""

    query: dict[str, Any]
    hits: list[Hit]
    image_file: Path | None = None  # the query's image on disk, when known (for thumbnails)

    def as_dict(self) -> dict[str, Any]:
        return {"query": self.query, "results": [hit.as_dict() for hit in self.hits]}


@dataclass
class ImageQueries:
    """Results of image-file queries, and the files that could not be decoded: (path, kind, message)."""

    results: list[QueryResult]
    errors: list[tuple[str, str, str]] = field(default_factory=list)


class Searcher:
    """Nearest-neighbour search over an index directory (``index.faiss`` + ``index.json`` + ``ids.parquet``)."""

    def __init__(self, index_dir: str | os.PathLike[str] | IndexDir) -> None:
        self.dir = index_dir if isinstance(index_dir, IndexDir) else open_index_dir(index_dir)

    @property
    def dim(self) -> int:
        return self.dir.dim

    @property
    def count(self) -> int:
        return len(self.dir.lookup)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """The ``k`` nearest indexed items of each query vector (L2-normalised, the index's dimension)."""
        if k < 1:
            raise IndexDirError(f"k must be at least 1, got {k}")
        x = ops.as_matrix(vectors, self.dim, "query vectors")
        scores, ids = ops.search(self.dir.index, x, k, self.dir.search_params, self.dir.masked)
        lookup = self.dir.lookup
        results = []
        for row_ids, row_scores in zip(ids, scores):
            valid = row_ids >= 0
            found, sims = row_ids[valid], row_scores[valid]
            pos = lookup.positions(found)
            if (pos < 0).any():
                raise IndexDirError(
                    f"{self.dir.path}: index.faiss returned ids missing from ids.parquet "
                    f"({found[pos < 0][:3].tolist()}); the files disagree: rebuild the index"
                )
            results.append(
                [
                    Hit(rank + 1, int(i), lookup.paths[p], lookup.labels[p], float(s))
                    for rank, (i, p, s) in enumerate(zip(found.tolist(), pos.tolist(), sims.tolist()))
                ]
            )
        return results

    def _by_ids(self, ids: np.ndarray, k: int) -> list[QueryResult]:
        vectors = ops.reconstruct(self.dir.index, ids)
        lookup = self.dir.lookup
        pos = lookup.positions(ids)
        found = self.search_vectors(vectors, k + TIE_SLACK)  # room for the item among exact duplicates
        return [
            QueryResult({"id": int(i), "path": lookup.paths[p]}, _self_first(hits, i)[:k])
            for i, p, hits in zip(ids.tolist(), pos.tolist(), found)
        ]

    def search_ids(self, ids: Sequence[int], k: int = 10) -> list[QueryResult]:
        """Neighbours of indexed items given by id (the item itself comes first, score ≈ 1)."""
        wanted = np.asarray([int(i) for i in ids], dtype=np.int64)
        resolve_targets(self.dir, ids=wanted.tolist())  # clear error for an unknown id
        return self._by_ids(wanted, k)

    def search_paths(self, paths: Sequence[str], k: int = 10) -> list[QueryResult]:
        """Neighbours of indexed items given by their path relative to the embedded folder."""
        resolve_targets(self.dir, paths=paths)
        by_path = self.dir.lookup.path_to_id()
        return self._by_ids(np.asarray([by_path[p] for p in paths], dtype=np.int64), k)

    def search_images(
        self, files: Sequence[str | os.PathLike[str]], k: int = 10, weights: str | None = None
    ) -> ImageQueries:
        """Neighbours of image files, embedded with the model recorded in the index (``weights`` overrides the
        recorded source; a file with another sha256 is refused). Files that cannot be decoded are reported in
        ``errors`` and skipped."""
        from extractor.images.discover import stored_name
        from extractor.network.features import FeatureExtractor

        extractor = FeatureExtractor.from_metadata(self.dir.info["embedding_metadata"], weights=weights)
        names = [str(f) for f in files]
        embedded = extractor.embed_images(names)
        hits = self.search_vectors(embedded.values, k) if embedded.indices else []
        results = [
            QueryResult({"image": stored_name(names[i])}, h, Path(names[i]).resolve())
            for i, h in zip(embedded.indices, hits)
        ]  # UTF-8 text, as the index's own paths are
        return ImageQueries(results, [(name, kind, message) for _, name, kind, message in embedded.failures])


def _self_first(hits: list[Hit], item_id: int) -> list[Hit]:
    """Put an item queried by id first when an exact duplicate ties with it (scores within ``TIE``)."""
    own = next((h for h in hits if h.id == item_id), None)
    if own is None or own.rank == 1 or own.score < hits[0].score - TIE:
        return hits
    ordered = [own] + [h for h in hits if h is not own]
    return [replace(h, rank=rank) for rank, h in enumerate(ordered, 1)]


def images_root(searcher: Searcher, override: str | os.PathLike[str] | None = None) -> str:
    """Where the indexed images are: ``override`` or the dataset root recorded in the index (a folder, the folder
    of tar shards, or an object-store URL: stored paths are relative to it). A local folder must exist; an object
    store is not contacted here (an image it cannot give becomes a placeholder)."""
    root = os.fspath(override) if override is not None else str(searcher.dir.info["embedding_metadata"]["root"])
    if not is_url(root) and not os.path.isdir(root):
        source = "given with --images-root" if override is not None else "recorded in the index"
        raise AlexfeatError(
            f"the images folder {root} ({source}) does not exist here; pass --images-root with "
            "the folder (or URL) that was embedded"
        )
    return root
