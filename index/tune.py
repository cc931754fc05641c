"""recall@10 and the search-parameter tuning that reaches a target recall at the best speed.

recall@10 (docs/design.md): up to ``RECALL_QUERIES`` vectors of the dataset as queries; the share of their exact top-10
(from a flat search over every vector) that the index returns. Tuning raises the one knob that trades speed for
recall (``nprobe`` of an inverted file, ``efSearch`` of HNSW) to the smallest value that reaches the target, by
doubling then bisecting, as autofaiss does; a refined index also tries re-ranking depths (``k_factor``) and keeps
the fastest combination that reaches the target.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import faiss
import numpy as np

from index import ops

log = logging.getLogger(__name__)

RECALL_K = 10
RECALL_QUERIES = 1_000
K_FACTORS = (1, 2, 4, 8, 16, 32, 64)
_START = {"nprobe": 1, "efSearch": 16}


@dataclass(frozen=True)
class RecallProbe:
    """The queries of a recall measurement and their exact top-k ids over all vectors."""

    queries: np.ndarray  # float32 (q, dim)
    truth: np.ndarray  # int64 (q, k)

    @property
    def k(self) -> int:
        return self.truth.shape[1]


@dataclass
class Tuning:
    """The chosen search parameters, the recall they reach and the time of one pass over the probe queries."""

    params: dict[str, int]
    recall: float
    seconds: float
    reached: bool
    tried: list[tuple[dict[str, int], float]] = field(default_factory=list)


def recall_probe(
    vectors: np.ndarray, ids: np.ndarray, n_queries: int = RECALL_QUERIES, k: int = RECALL_K, seed: int = 0
) -> RecallProbe:
    """Sample up to ``n_queries`` rows of ``vectors`` and find their exact top-``k`` ids (k ≤ N) by brute force."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    rows = np.sort(rng.choice(n, size=min(n_queries, n), replace=False))
    queries = np.ascontiguousarray(vectors[rows])
    _, positions = faiss.knn(queries, vectors, min(k, n), metric=faiss.METRIC_INNER_PRODUCT)
    return RecallProbe(queries, np.asarray(ids, dtype=np.int64)[positions])


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` found anywhere in the same row of ``found`` (ids; -1 never matches)."""
    if truth.size == 0:
        return 1.0
    k = truth.shape[1]
    hits = sum(np.intersect1d(f[:k], t).size for f, t in zip(found, truth))
    return hits / truth.size


def measure(
    index: faiss.Index, probe: RecallProbe, params: dict[str, int], masked: np.ndarray | None = None
) -> tuple[float, float]:
    """(recall, seconds) of searching the probe queries with ``params``; the faster of two timed passes."""
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        _, found = ops.search(index, probe.queries, probe.k, params, masked)
        best = min(best, time.perf_counter() - start)
    return recall_at_k(found, probe.truth), best


def _smallest_reaching(evaluate: Callable[[int], float], start: int, limit: int, target: float) -> int:
    """The smallest value in [start, limit] whose recall reaches ``target`` (recall grows with the value):
    double until it does, then bisect; ``limit`` when none does."""
    low, high = start - 1, start
    while evaluate(high) < target:
        if high >= limit:
            return limit
        low, high = high, min(high * 2, limit)
    while high - low > 1:
        middle = (low + high) // 2
        if evaluate(middle) >= target:
            high = middle
        else:
            low = middle
    return high


def tune(index: faiss.Index, probe: RecallProbe, target: float, masked: np.ndarray | None = None) -> Tuning:
    """Search parameters reaching ``target`` recall at the best speed (the best recall when none reaches it)."""
    knobs = ops.tunable(index)
    primary = next((name for name in ("nprobe", "efSearch") if name in knobs), None)
    tried: dict[tuple[tuple[str, int], ...], float] = {}

    def recall_of(params: dict[str, int]) -> float:
        key = tuple(sorted(params.items()))
        if key not in tried:
            _, found = ops.search(index, probe.queries, probe.k, params, masked)
            tried[key] = recall_at_k(found, probe.truth)
        return tried[key]

    def recall_with(fixed: dict[str, int], knob: str, value: int) -> float:
        return recall_of({**fixed, knob: value})

    candidates = []
    for k_factor in K_FACTORS if "k_factor" in knobs else (None,):
        base = {} if k_factor is None else {"k_factor": k_factor}
        if primary is not None:
            start = max(_START[primary], probe.k if primary == "efSearch" else 1)
            evaluate = functools.partial(recall_with, dict(base), primary)
            base[primary] = _smallest_reaching(evaluate, start, knobs[primary], target)
        recall, seconds = measure(index, probe, base, masked)
        candidates.append(Tuning(base, recall, seconds, recall >= target))
        if recall >= target and (primary is None or base[primary] <= _START[primary]):
            break  # the cheapest setting of the knob already reaches it: deeper re-ranking only costs time
    reaching = [c for c in candidates if c.reached]
    best = min(reaching, key=lambda c: c.seconds) if reaching else max(candidates, key=lambda c: (c.recall, -c.seconds))
    best.tried = [(dict(key), recall) for key, recall in tried.items()]
    if not best.reached:
        log.warning(
            "recall@%d %.3f is below the target %.3f even with %s; consider a more exact --factory or a "
            "larger --memory-budget",
            probe.k,
            best.recall,
            target,
            best.params or "the defaults",
        )
    log.info(
        "tuned %s: recall@%d %.3f, %.0f queries/s",
        best.params or "(nothing to tune)",
        probe.k,
        best.recall,
        len(probe.queries) / max(best.seconds, 1e-9),
    )
    return best
