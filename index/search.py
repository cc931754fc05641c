"""Query an index directory by vector, id, path or image file; results carry the dataset's id, path and label.

An image query is decoded and embedded with exactly the model settings recorded in the index (its embedding
metadata), so it lands in the same space as the indexed vectors.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from extractor.errors import AlexfeatError, IndexDirError
from extractor.network.precision import resolve_precision
from index import ops
from index.expansion import ALPHA, DEFAULT_EXPAND, check_count, expand_queries
from index.indexdir import IndexDir, as_ids, open_index_dir, resolve_targets

if TYPE_CHECKING:
    from extractor.network.features import FeatureExtractor

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

    def first(self, k: int) -> QueryResult:
        """The same query with its ``k`` nearest hits."""
        return replace(self, hits=self.hits[:k])


@dataclass
class SearchResults:
    """One result per query, in query order, and the query images that could not be decoded: (path, kind,
    message)."""

    results: list[QueryResult]
    errors: list[tuple[str, str, str]] = field(default_factory=list)


class Searcher:
    """Nearest-neighbour search over an index directory (``index.faiss`` + ``index.json`` + ``ids.parquet``).

    The index is read once; the model that embeds image queries is built on the first image query and kept, so
    one searcher answers many queries (e.g. in a server). ``weights`` overrides the weights source recorded in
    the index for image queries (a file with another sha256 is refused); ``precision`` (``auto``, ``float32``,
    ``bfloat16``) is how that model runs, whatever precision the indexed vectors were computed in.
    """

    def __init__(
        self, index_dir: str | os.PathLike[str] | IndexDir, weights: str | None = None, precision: str = "auto"
    ) -> None:
        self.dir = index_dir if isinstance(index_dir, IndexDir) else open_index_dir(index_dir)
        self.weights = weights
        self.precision = resolve_precision(precision)  # an unknown name fails here, not at the first image query
        self._extractor: FeatureExtractor | None = None
        self._extractor_lock = threading.Lock()  # threads serving queries build one model between them

    @property
    def dim(self) -> int:
        return self.dir.dim

    @property
    def count(self) -> int:
        return len(self.dir.lookup)

    def expand(self, vectors: np.ndarray, expand: int, exclude: np.ndarray | None = None) -> np.ndarray:
        """αQE: each query vector replaced by the similarity^α-weighted sum of itself and its top-``expand``
        neighbours in the index (``exclude``: per query an id not counted among them, e.g. the item itself)."""
        x = ops.as_matrix(vectors, self.dim, "query vectors")
        k = check_count(expand, "expand")
        return expand_queries(self.dir.index, x, k, ALPHA, self.dir.search_params, self.dir.masked, exclude)

    def search_vectors(self, vectors: np.ndarray, k: int = 10, expand: int = DEFAULT_EXPAND) -> list[list[Hit]]:
        """The ``k`` nearest indexed items of each query vector (L2-normalised, the index's dimension), the
        queries first expanded with their top-``expand`` neighbours (αQE; 0: as given)."""
        if k < 1:
            raise IndexDirError(f"k must be at least 1, got {k}")
        k = min(k, max(self.dir.index.ntotal, 1))  # never more results than vectors: nothing else is allocated
        x = self.expand(vectors, expand)
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

    def _by_ids(self, ids: np.ndarray, k: int, exclude_self: bool, expand: int) -> list[QueryResult]:
        stored = ops.reconstruct(self.dir.index, ids)
        vectors = self.expand(stored, expand, exclude=ids)  # the item is not its own neighbour
        lookup = self.dir.lookup
        pos = lookup.positions(ids)
        found = self.search_vectors(vectors, k + TIE_SLACK, expand=0)  # room for the item among exact duplicates
        results = []
        for i, p, hits, own_score in zip(ids.tolist(), pos.tolist(), found, (vectors * stored).sum(axis=1).tolist()):
            if exclude_self:
                hits = _without(hits, i)
            elif expand:  # an expanded query may sit nearer a neighbour than the item: the item still comes first
                own = Hit(1, i, lookup.paths[p], lookup.labels[p], own_score)
                hits = [own] + _without(hits, i)
                hits = [replace(h, rank=rank) for rank, h in enumerate(hits, 1)]
            else:
                hits = _self_first(hits, i)
            results.append(QueryResult({"id": i, "path": lookup.paths[p]}, hits).first(k))
        return results

    def search_ids(
        self, ids: Sequence[int], k: int = 10, exclude_self: bool = False, expand: int = DEFAULT_EXPAND
    ) -> list[QueryResult]:
        """Neighbours of indexed items given by id: the item itself comes first, or with ``exclude_self`` is left
        out. The stored vector is first expanded with its top-``expand`` other neighbours (αQE; 0: raw)."""
        wanted = as_ids(ids)
        resolve_targets(self.dir, ids=wanted.tolist())  # clear error for an unknown id
        return self._by_ids(wanted, k, exclude_self, expand)

    def search_paths(
        self, paths: Sequence[str], k: int = 10, exclude_self: bool = False, expand: int = DEFAULT_EXPAND
    ) -> list[QueryResult]:
        """Neighbours of indexed items given by their path relative to the embedded folder (``exclude_self``,
        ``expand``: as :meth:`search_ids`)."""
        resolve_targets(self.dir, paths=paths)
        by_path = self.dir.lookup.path_to_id()
        return self._by_ids(np.asarray([by_path[p] for p in paths], dtype=np.int64), k, exclude_self, expand)

    @property
    def extractor(self) -> FeatureExtractor:
        """The model of the indexed embeddings (its recorded settings), built on first use and kept."""
        with self._extractor_lock:
            if self._extractor is None:
                from extractor.network.features import FeatureExtractor
                from extractor.network.tf_runtime import import_tensorflow

                extractor = FeatureExtractor.from_metadata(self.dir.meta, self.weights, self.precision)
                import_tensorflow()
                self._extractor = extractor
            return self._extractor

    def search_images(
        self,
        files: Sequence[str | os.PathLike[str]],
        k: int = 10,
        exclude_self: bool = False,
        expand: int = DEFAULT_EXPAND,
    ) -> SearchResults:
        """Neighbours of image files, embedded with the model recorded in the index and expanded with their
        top-``expand`` neighbours (αQE; 0: raw). Files that cannot be decoded are reported in ``errors`` and
        skipped. With ``exclude_self``, a query file that is itself indexed (the same file under the recorded
        root) is left out of its own results (and of its expansion)."""
        from extractor.images.discover import stored_name

        names = [str(f) for f in files]
        embedded = self.extractor.embed_images(names)
        ok, vectors = embedded.indices, embedded.values
        own = self._indexed_ids([names[i] for i in ok]) if exclude_self else [None] * len(ok)
        exclude = np.array([-1 if i is None else i for i in own], dtype=np.int64) if exclude_self else None
        if ok:
            vectors = self.expand(vectors, expand, exclude)
        hits = self.search_vectors(vectors, k + (TIE_SLACK if exclude_self else 0), expand=0) if ok else []
        results = [
            QueryResult({"image": stored_name(names[i])}, _without(h, self_id), Path(names[i]).resolve()).first(k)
            for i, h, self_id in zip(ok, hits, own)
        ]  # UTF-8 text, as the index's own paths are
        return SearchResults(results, [(name, kind, message) for _, name, kind, message in embedded.failures])

    def search(
        self,
        images: Sequence[str | os.PathLike[str]] = (),
        ids: Sequence[int] = (),
        paths: Sequence[str] = (),
        queries_dir: str | os.PathLike[str] | None = None,
        k: int = 10,
        exclude_self: bool = False,
        expand: int = DEFAULT_EXPAND,
    ) -> SearchResults:
        """Neighbours of any mix of queries, answered in this order: indexed ids, indexed paths, image files, then
        every image in ``queries_dir``. Image queries that cannot be decoded are reported in ``errors`` (and have
        no result). ``exclude_self`` leaves each query's own item out of its results; each query is first expanded
        with its top-``expand`` neighbours (αQE; 0: raw nearest neighbours)."""
        if not (len(images) or len(ids) or len(paths) or queries_dir is not None):
            raise AlexfeatError("give at least one query: images, ids, paths or queries_dir")
        results = SearchResults([])
        if len(ids):
            results.results += self.search_ids(ids, k, exclude_self, expand)
        if len(paths):
            results.results += self.search_paths(paths, k, exclude_self, expand)
        files = list(images) + (query_files(queries_dir) if queries_dir is not None else [])
        if files:
            found = self.search_images(files, k, exclude_self, expand)
            results.results += found.results
            results.errors += found.errors
        return results

    def _indexed_ids(self, files: Sequence[str]) -> list[int | None]:
        """The id of each file if it is an indexed item (under the recorded root), else None."""
        from extractor.images.discover import stored_name

        if self.dir.meta.root is None:  # a dataset written from Python without a root: no file is indexed
            return [None] * len(files)
        root = Path(self.dir.meta.root).resolve()
        by_path = self.dir.lookup.path_to_id()
        found: list[int | None] = []
        for name in files:
            try:
                rel = Path(name).resolve().relative_to(root)
            except ValueError:
                found.append(None)
                continue
            found.append(by_path.get(stored_name(rel.as_posix())))
        return found


def search_index(
    index_dir: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]] = (),
    ids: Sequence[int] = (),
    paths: Sequence[str] = (),
    queries_dir: str | os.PathLike[str] | None = None,
    k: int = 10,
    weights: str | None = None,
    exclude_self: bool = False,
    expand: int = DEFAULT_EXPAND,
    precision: str = "auto",
) -> SearchResults:
    """One-off search of ``index_dir`` (see :meth:`Searcher.search`); keep a :class:`Searcher` for many."""
    return Searcher(index_dir, weights, precision).search(images, ids, paths, queries_dir, k, exclude_self, expand)


def query_files(queries_dir: str | os.PathLike[str]) -> list[str]:
    """Every image file under ``queries_dir`` (recursively); an error when there is none."""
    from extractor.images.discover import discover

    files = [entry.abs_path for entry in discover(queries_dir)]
    if not files:
        raise AlexfeatError(f"{queries_dir} holds no image files")
    return files


def _without(hits: list[Hit], item_id: int | None) -> list[Hit]:
    """``hits`` without the item ``item_id`` (ranks renumbered)."""
    if item_id is None:
        return hits
    return [replace(h, rank=rank) for rank, h in enumerate((h for h in hits if h.id != item_id), 1)]


def _self_first(hits: list[Hit], item_id: int) -> list[Hit]:
    """Put an item queried by id first when an exact duplicate ties with it (scores within ``TIE``)."""
    own = next((h for h in hits if h.id == item_id), None)
    if own is None or own.rank == 1 or own.score < hits[0].score - TIE:
        return hits
    ordered = [own] + [h for h in hits if h is not own]
    return [replace(h, rank=rank) for rank, h in enumerate(ordered, 1)]


def images_root(searcher: Searcher, override: str | os.PathLike[str] | None = None) -> str:
    """Where the indexed images are: ``override`` or the dataset root recorded in the index (a folder, the folder
    of tar shards, or an object-store URL: stored paths are relative to it)."""
    from index.verify import images_root as dataset_images_root

    return dataset_images_root(searcher.dir.meta.root, override, "the index")
