"""α-weighted query expansion (αQE) and database-side augmentation (DBA) (Radenović, Tolias, Chum, TPAMI 2018).

Both replace a vector by the L2-normalised sum of itself and its nearest neighbours, each weighted by its cosine
similarity to the vector raised to the power α (negative similarities weigh nothing):

- αQE, at search time: the query's top-K neighbours are fetched from the index, the query re-issued as that sum;
- DBA, when an index is built: every stored vector becomes that sum over its K nearest neighbours in the dataset
  (itself among them), found with the index's own (approximate) search in batches, never an N×N matrix.
"""

from __future__ import annotations

from collections.abc import Mapping

import faiss
import numpy as np

from extractor.errors import AlexfeatError
from index import ops

ALPHA = 3.0  # the similarity exponent (Radenović et al.; measured on the dev set, see README "Search quality")
DEFAULT_EXPAND = 3  # αQE neighbours of `alexfeat search` (chosen by scripts/eval_quality.py)
DEFAULT_AUGMENT = 10  # DBA neighbours (itself included) of `alexfeat index build` (chosen the same way)
AUGMENT_BATCH = 8_192  # vectors augmented per search call: bounds the (batch, K, dim) neighbour block


def weighted_sum(vectors: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """L2-normalised ``vector + Σ max(sim, 0)^α · neighbour`` of each row.

    ``vectors`` (n, d), ``neighbours`` (n, K, d) and their cosine similarities to the vectors ``sims`` (n, K);
    rows of ``sims`` that are -inf (a neighbour the index did not return) weigh nothing.
    """
    weights = np.power(np.clip(np.nan_to_num(sims, neginf=0.0), 0.0, None), alpha).astype(np.float32)
    total = vectors.astype(np.float32) + np.einsum("nk,nkd->nd", weights, neighbours.astype(np.float32))
    norms = np.linalg.norm(total, axis=1, keepdims=True)
    return np.ascontiguousarray(total / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def check_count(k: int, what: str) -> int:
    """``k`` as a non-negative int; AlexfeatError naming ``what`` otherwise (the CLI's ranges catch it first)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise AlexfeatError(f"{what} must be a whole number of neighbours >= 0 (0: off), got {k!r}")
    return int(k)


def neighbour_vectors(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    params: Mapping[str, int] | None = None,
    masked: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The stored vectors (n, k, d) of each query's top-``k`` neighbours in ``index`` and their similarities
    (n, k); ``exclude`` gives per query an id left out (the item itself when querying by id; -1 for none).
    Missing neighbours are zero vectors with similarity -inf."""
    n, dim = queries.shape
    extra = 1 if exclude is not None else 0
    scores, ids = ops.search(index, queries, k + extra, params, masked)
    if exclude is not None:
        keep = ids != exclude[:, None]
        # drop the excluded id where it occurs, else the last result, so each row keeps k
        keep[~(~keep).any(axis=1), -1] = False
        ids = ids[keep].reshape(n, k)
        scores = scores[keep].reshape(n, k)
    found = ids >= 0
    out = np.zeros((n, k, dim), np.float32)
    if found.any():
        out[found] = ops.reconstruct(index, ids[found])
    return out, np.where(found, scores, -np.inf).astype(np.float32)


def expand_queries(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    alpha: float = ALPHA,
    params: Mapping[str, int] | None = None,
    masked: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """αQE: each query replaced by the weighted sum of itself and its top-``k`` neighbours in ``index``."""
    if k == 0 or len(queries) == 0:
        return queries
    neighbours, sims = neighbour_vectors(index, queries, k, params, masked, exclude)
    return weighted_sum(queries, neighbours, sims, alpha)


def augment_database(
    index: faiss.Index,
    vectors: np.ndarray,
    ids: np.ndarray,
    k: int,
    alpha: float = ALPHA,
    params: Mapping[str, int] | None = None,
) -> np.ndarray:
    """DBA: each of ``vectors`` (stored in ``index`` under ``ids``) replaced by the weighted sum over its ``k``
    nearest neighbours in the index, itself included (so ``k - 1`` others), using the raw ``vectors`` of the
    neighbours and the index's own search (batched: memory grows with the batch, not with N²)."""
    if k <= 1:
        return vectors
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    out = np.empty_like(vectors, dtype=np.float32)
    for start in range(0, len(vectors), AUGMENT_BATCH):
        block = np.ascontiguousarray(vectors[start : start + AUGMENT_BATCH], dtype=np.float32)
        own = ids[start : start + AUGMENT_BATCH]
        scores, found = ops.search(index, block, k, params)
        keep = found != own[:, None]  # the item itself is the vector's own term
        keep[~(~keep).any(axis=1), -1] = False
        found, scores = found[keep].reshape(len(block), k - 1), scores[keep].reshape(len(block), k - 1)
        rows = order[np.clip(np.searchsorted(sorted_ids, found), 0, len(ids) - 1)]
        valid = (found >= 0) & (ids[rows] == found)
        neighbours = np.where(valid[..., None], vectors[rows], 0.0)
        out[start : start + len(block)] = weighted_sum(block, neighbours, np.where(valid, scores, -np.inf), alpha)
    return out
