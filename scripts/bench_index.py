"""Benchmark ``alexfeat index`` (``--factory auto``) against exact search, measured in the same run.

For each size, synthetic clustered unit vectors (a Gaussian mixture, L2-normalised) are indexed twice: exactly
(``IndexFlatIP``, brute force) and with ``auto`` (factory chosen, trained, tuned to the target recall). Held-out
queries from the same mixture measure queries/s (median of ``--repeats`` timed passes, all cores) and recall@10
against the exact top-10. With ``--dataset EMB_DIR``, a real embeddings dataset is benchmarked too (its own
vectors as queries, as recall@10 is defined in docs/design.md).

    python scripts/bench_index.py --sizes 100k,1M
    python scripts/bench_index.py --sizes 20k --dataset embeddings/

Target at 1M × 256: recall@10 >= 0.95 with >= 20x the queries/s of exact search.

With ``--augment K`` (default: the build's, 0 to skip) each size is also built with database-side augmentation
(``alexfeat index build --augment K``): the row ``auto+dba`` reports its build time, of which ``augment s`` is
the augmentation (every vector searched in the tuned index, in batches, then the index refilled) and its
in-sample recall@10 over the augmented vectors.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from index import ops
from index.build import build_index
from index.expansion import DEFAULT_AUGMENT
from index.factory import parse_memory_budget
from index.tune import recall_at_k

K = 10


@dataclass
class Row:
    data: str
    n: int
    method: str
    factory: str
    params: str
    build_s: float
    size_mb: float
    qps: float
    recall: float
    speedup: float = 1.0
    augment_s: float = 0.0


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def mixture(n: int, dim: int, clusters: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian mixture sampler: returns (centres, the first ``n`` points), unit length."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    return centres, sample(centres, n, spread, rng)


def sample(centres: np.ndarray, n: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    x = np.empty((n, centres.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks, to keep the temporary arrays small
        stop = min(n, start + 100_000)
        x[start:stop] = centres[rng.integers(0, len(centres), stop - start)]
        x[start:stop] += spread * rng.standard_normal((stop - start, centres.shape[1]), dtype=np.float32)
    faiss.normalize_L2(x)
    return x


def timed_qps(search, queries: np.ndarray, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        search(queries)
        times.append(time.perf_counter() - start)
    return len(queries) / statistics.median(times)


def bench(name: str, base: np.ndarray, queries: np.ndarray, args: argparse.Namespace) -> list[Row]:
    n, dim = base.shape
    start = time.perf_counter()
    flat = faiss.IndexFlatIP(dim)
    flat.add(base)
    exact_build = time.perf_counter() - start
    _, truth = flat.search(queries, K)
    exact_qps = timed_qps(lambda q: flat.search(q, K), queries, args.repeats)
    rows = [Row(name, n, "exact", "Flat", "-", exact_build, flat.ntotal * dim * 4 / 1e6, exact_qps, 1.0)]
    flat.reset()  # free its copy of the vectors before the next index is built

    ids = np.arange(n, dtype=np.int64)
    start = time.perf_counter()
    built = build_index(base, ids, "auto", args.memory_budget, args.target_recall)
    build_s = time.perf_counter() - start
    size_mb = len(faiss.serialize_index(built.index)) / 1e6
    params = built.search_params
    _, found = ops.search(built.index, queries, K, params)
    qps = timed_qps(lambda q: ops.search(built.index, q, K, params), queries, args.repeats)
    rows.append(
        Row(
            name,
            n,
            "auto",
            built.factory,
            ",".join(f"{k}={v}" for k, v in params.items()) or "-",
            build_s,
            size_mb,
            qps,
            recall_at_k(found, truth),
            qps / exact_qps,
        )
    )
    print(
        f"  {name}: auto phases {built.phase_seconds}, in-sample recall@10 {built.recall_at_10:.3f}",
        file=sys.stderr,
        flush=True,
    )
    built.index.reset()  # free it before the augmented build
    if args.augment > 1:
        start = time.perf_counter()
        augmented = build_index(base, ids, "auto", args.memory_budget, args.target_recall, augment=args.augment)
        build_s = time.perf_counter() - start
        params = augmented.search_params
        qps = timed_qps(lambda q: ops.search(augmented.index, q, K, params), queries, args.repeats)
        rows.append(
            Row(
                name,
                n,
                "auto+dba",
                augmented.factory,
                ",".join(f"{k}={v}" for k, v in params.items()) or "-",
                build_s,
                len(faiss.serialize_index(augmented.index)) / 1e6,
                qps,
                augmented.recall_at_10,
                qps / exact_qps,
                augmented.phase_seconds.get("augment", 0.0),
            )
        )
        print(f"  {name}: auto+dba phases {augmented.phase_seconds}", file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[Row]) -> None:
    print(
        f"{'data':<22} {'N':>9} {'method':<6} {'factory':<20} {'params':<12} {'build s':>8} {'size MB':>8} "
        f"{'queries/s':>10} {'recall@10':>9} {'x exact':>8} {'augment s':>9}"
    )
    for r in rows:
        print(
            f"{r.data:<22} {r.n:>9,} {r.method:<6} {r.factory:<20} {r.params:<12} {r.build_s:>8.1f} "
            f"{r.size_mb:>8.1f} {r.qps:>10,.0f} {r.recall:>9.3f} {r.speedup:>8.1f} {r.augment_s:>9.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,1M", help="comma-separated vector counts (k/M suffixes)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=1000, help="mixture components")
    parser.add_argument("--spread", type=float, default=1.0, help="std of each component (centres: std 1)")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries per size")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (median)")
    parser.add_argument("--memory-budget", type=parse_memory_budget, default=None)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--dataset", type=Path, help="also benchmark a real embeddings dataset directory")
    parser.add_argument("--threads", type=int, default=None, help="FAISS threads (default: all cores)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument(
        "--augment", type=int, default=DEFAULT_AUGMENT, help="also build with DBA over K neighbours (0: skip)"
    )
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    print(
        f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads; mixture of {args.clusters} "
        f"components, spread {args.spread}, {args.dim}-d; {args.queries} held-out queries; k={K}",
        file=sys.stderr,
        flush=True,
    )
    rows: list[Row] = []
    for text in filter(None, args.sizes.split(",")):
        n = parse_size(text)
        centres, base = mixture(n, args.dim, args.clusters, args.spread, seed=0)
        queries = sample(centres, args.queries, args.spread, np.random.default_rng(1))
        rows += bench(f"synthetic {args.dim}-d", base, queries, args)
        del base
    if args.dataset is not None:
        from extractor.store import load_dataset

        data = load_dataset(args.dataset, columns=("id",))
        pick = np.random.default_rng(0).choice(len(data), min(args.queries, len(data)), replace=False)
        rows += bench(f"{args.dataset.name} {data.meta.dim}-d", data.vectors, data.vectors[np.sort(pick)], args)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")


if __name__ == "__main__":
    main()
