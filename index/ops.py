"""FAISS mechanics on one index object: create with ids, train, add, remove or mask, reconstruct, search.

Every index is keyed by the dataset's int64 ids. Index types that take ids themselves (the inverted files) keep
them, with a hash-table direct map so vectors can be reconstructed and removed by id; the others are wrapped in
``IndexIDMap2``. Types that cannot remove (HNSW, refined PQ) are searched with the removed ids masked out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import faiss
import numpy as np

from extractor.errors import IndexDirError
from extractor.util.progress import Progress

METRIC = "inner_product"  # on L2-normalised vectors: cosine similarity
ADD_CHUNK = 65_536


def as_matrix(vectors: np.ndarray, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (N, dim) matrix; IndexDirError on a wrong shape or dimension."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise IndexDirError(f"{what} must be a matrix (N, dim), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise IndexDirError(
            f"{what} have {x.shape[1]} dimensions but the index has {dim}: they come from another "
            "model, layer or pooling; query with embeddings made like the index's"
        )
    if not np.isfinite(x).all():
        raise IndexDirError(f"{what} hold NaN or infinite values")
    return x


def _unwrap(index: faiss.Index) -> faiss.Index:
    """The index inside ``IndexPreTransform`` layers."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def takes_ids(index: faiss.Index) -> bool:
    """Whether ``index`` stores the ids given to ``add_with_ids`` itself (inverted files, id maps)."""
    return isinstance(_unwrap(index), (faiss.IndexIVF, faiss.IndexIDMap, faiss.IndexIDMap2))


def create(factory: str, dim: int) -> tuple[faiss.Index, str]:
    """A new inner-product index for ``factory``, keyed by ids; returns it and the factory string that rebuilds
    it exactly (``IDMap2,`` prepended where the type needs an id map)."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexDirError(
            f"FAISS cannot build --factory {factory!r} ({faiss_reason(exc)}); see the FAISS wiki page "
            "'The index factory', or use --factory auto"
        ) from None
    if not takes_ids(index):
        factory = f"IDMap2,{factory}"
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    prepare_direct_map(index)
    return index, factory


def prepare_direct_map(index: faiss.Index) -> None:
    """Give an inverted file that holds the ids a hash-table direct map (reconstruct and remove by id)."""
    inner = _unwrap(index)
    hashtable = faiss.DirectMap.Hashtable  # type: ignore[attr-defined]  # faiss's stubs omit DirectMap
    if isinstance(inner, faiss.IndexIVF) and inner.direct_map.type != hashtable:
        inner.set_direct_map_type(hashtable)


def train(index: faiss.Index, sample: np.ndarray) -> None:
    """Train ``index`` on ``sample`` (quantisers' centroids and ranges); nothing to do for flat and HNSW."""
    if not index.is_trained:
        index.train(sample)


def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, progress: bool | None = None) -> None:
    """Add ``vectors`` under ``ids`` in chunks, with a progress bar for large batches."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    with Progress(len(ids) if len(ids) > ADD_CHUNK else 0, "index add", enabled=progress, unit="vec") as bar:
        for start in range(0, len(ids), ADD_CHUNK):
            stop = start + ADD_CHUNK
            index.add_with_ids(vectors[start:stop], ids[start:stop])
            bar.update(min(stop, len(ids)) - start)


def can_remove(index: faiss.Index) -> bool:
    """Whether ``index.remove_ids`` works for this type (probed with an empty selection, which changes nothing)."""
    try:
        index.remove_ids(faiss.IDSelectorArray(np.empty(0, dtype=np.int64)))
    except RuntimeError:
        return False
    return True


def remove(index: faiss.Index, ids: Iterable[int]) -> int:
    """Remove ``ids`` from an index that can remove (see ``can_remove``); returns how many were stored."""
    wanted = np.unique(np.fromiter(ids, dtype=np.int64))
    if wanted.size == 0:
        return 0
    return int(index.remove_ids(faiss.IDSelectorArray(wanted)))


def reconstruct(index: faiss.Index, ids: Iterable[int]) -> np.ndarray:
    """The stored vectors of ``ids`` (exact for flat storage, decoded codes otherwise), float32 (n, dim).

    A merged on-disk index is saved without the id → list map (GBs at 100M vectors): it is built here, in
    memory, on the first call."""
    prepare_direct_map(index)
    wanted = np.ascontiguousarray(np.fromiter(ids, dtype=np.int64))
    if wanted.size:
        try:
            return np.asarray(index.reconstruct_batch(wanted), dtype=np.float32).reshape(wanted.size, index.d)
        except RuntimeError:
            pass  # one at a time below, to name the id that cannot be returned
    rows = []
    for i in wanted.tolist():
        try:
            rows.append(index.reconstruct(int(i)))
        except RuntimeError as exc:
            raise IndexDirError(
                f"the index cannot return the stored vector of id {i} ({faiss_reason(exc)}); query by image instead"
            ) from None
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, index.d), np.float32)


# ----------------------------------------------------------------------------------------- search parameters


def tunable(index: faiss.Index) -> dict[str, int]:
    """The search parameters of ``index`` and their upper bounds: ``nprobe`` (≤ nlist), ``efSearch``,
    ``k_factor`` (re-ranking depth of a refined index)."""
    found: dict[str, int] = {}
    node: faiss.Index | None = faiss.downcast_index(index)
    while node is not None:
        if isinstance(node, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
            node = faiss.downcast_index(node.index)
        elif isinstance(node, faiss.IndexRefine):
            found["k_factor"] = 64
            node = faiss.downcast_index(node.base_index)
        elif isinstance(node, faiss.IndexIVF):
            found["nprobe"] = int(node.nlist)
            node = None
        elif isinstance(node, faiss.IndexHNSW):
            found["efSearch"] = 4096
            node = None
        else:
            node = None
    return found


class _Params:
    """Typed FAISS search parameters for one search, holding the selector objects alive while it runs."""

    def __init__(self, index: faiss.Index, values: Mapping[str, int], sel: faiss.IDSelector | None) -> None:
        self.sel = sel
        self.sel_applied = False
        self.values = dict(values)
        self.keep: list[Any] = [sel]
        self.params = self._build(faiss.downcast_index(index), sel)

    def _build(self, node: faiss.Index, sel: faiss.IDSelector | None) -> Any:
        params: Any  # one of FAISS's SearchParameters classes, chosen by the node's type
        if isinstance(node, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            return self._build(faiss.downcast_index(node.index), sel)  # the id map translates the selector
        if isinstance(node, faiss.IndexPreTransform):
            inner = self._build(faiss.downcast_index(node.index), sel)
            params = faiss.SearchParametersPreTransform()
            params.index_params = inner
            return self._kept(params)
        if isinstance(node, faiss.IndexRefine):
            base = self._build(faiss.downcast_index(node.base_index), None)  # selector not forwarded: post-filter
            params = faiss.IndexRefineSearchParameters()
            params.k_factor = float(self.values.get("k_factor", node.k_factor))
            params.base_index_params = base
            return self._kept(params)
        if isinstance(node, faiss.IndexIVF):
            params = faiss.SearchParametersIVF()
            params.nprobe = int(self.values.get("nprobe", node.nprobe))
        elif isinstance(node, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from faiss's stubs
            params.efSearch = int(self.values.get("efSearch", node.hnsw.efSearch))
        elif isinstance(node, (faiss.IndexFlat, faiss.IndexScalarQuantizer)):
            if sel is None:
                return None
            params = faiss.SearchParameters()
        else:
            return None
        if sel is not None:
            params.sel = sel
            self.sel_applied = True
        return self._kept(params)

    def _kept(self, params: Any) -> Any:
        self.keep.append(params)
        return params


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    params: Mapping[str, int] | None = None,
    masked: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) per query, never returning a ``masked`` id; missing results are id -1, score -inf.

    ``params`` are search parameters (``tunable``), passed per call so the index itself is not changed. Masked
    ids are excluded inside FAISS with an ``IDSelector`` where the index type supports it, otherwise by fetching
    ``k + len(masked)`` results and filtering them.
    """
    masked = np.ascontiguousarray(np.empty(0) if masked is None else masked, dtype=np.int64)
    batch = faiss.IDSelectorBatch(masked) if masked.size else None
    sel = faiss.IDSelectorNot(batch) if batch is not None else None
    built = _Params(index, params or {}, sel)
    built.keep.append(batch)  # the selectors hold raw pointers: keep their Python objects alive
    fetch = min(k if built.sel_applied or not masked.size else k + masked.size, max(index.ntotal, 1))
    scores, ids = index.search(queries, fetch, params=built.params)
    if masked.size and not built.sel_applied:
        drop = np.isin(ids, masked)
        ids, scores = ids.copy(), scores.copy()
        ids[drop], scores[drop] = -1, -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")
        ids, scores = np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)
    ids, scores = ids[:, :k], scores[:, :k]
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    return scores, ids


def faiss_reason(exc: BaseException) -> str:
    """The message of a FAISS error without its C++ location prefix."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return re.sub(r"^Error in .*? at \S+: ", "", text)[:200]


def describe(index: faiss.Index) -> str:
    """The class chain of an index, e.g. ``IndexIDMap2(IndexHNSWFlat)``."""
    node = faiss.downcast_index(index)
    if isinstance(node, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
        return f"{type(node).__name__}({describe(node.index)})"
    if isinstance(node, faiss.IndexRefine):
        return f"{type(node).__name__}({describe(node.base_index)}, {describe(node.refine_index)})"
    return type(node).__name__
