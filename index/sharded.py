"""A sharded index build for collections too large for one machine's memory: ``index build --shards N``.

FAISS's own recipe (``faiss.contrib.ondisk``): train the inverted file's coarse quantiser (and codes) once on a
sample, add each shard of the dataset to a copy of the trained, empty index independently (``add_with_ids`` with
the Parquet ids: no id map whose reverse table would cost GBs at 100M vectors), then merge the shards' inverted
lists with ``merge_ondisk`` into ``index.ivfdata`` beside ``index.faiss``. The index is opened with
``IO_FLAG_ONDISK_SAME_DIR`` (the directory can be moved) and read-only: its lists stay on disk, paged in by
searches.

A shard is a run of the dataset's part files, read by whoever adds it (this process, or a Ray task on any node of
a cluster when the dataset and the index directory are on a shared file system). The training sample and the
recall queries are the rows a one-shot build would pick, so both builds give the same index and the same
``index.json`` keys; the exact top-10 that recall is measured against is merged from each shard's own.

Exact search (``Flat``, or HNSW) has no inverted lists to merge: ``--factory auto`` below the IVF threshold then
builds the one-shot index (``shards`` recorded as 1), and an explicit non-IVF factory is refused.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk

from extractor.errors import IndexDirError
from extractor.store import load_dataset
from extractor.store.reader import require_parts
from extractor.util.timing import Phases
from index import ops
from index.build import (
    DEFAULT_TARGET_RECALL,
    LOOKUP_COLUMNS,
    BuildSummary,
    BuiltIndex,
    build_index_dir,
    index_info,
    lookup_of,
)
from index.factory import FactoryChoice, check_factory, choose_factory, training_size
from index.indexdir import IVFDATA_FILE, index_lock, prepare_output, write_index_dir
from index.tune import RECALL_K, RECALL_QUERIES, RecallProbe, tune

log = logging.getLogger(__name__)

STAGING = ".shards.tmp"
"""Work directory inside the index directory (shards, the trained index); removed when the build ends."""

ShardResult = tuple[np.ndarray, np.ndarray]
"""A shard's exact top-k of the recall queries: (scores, ids), float32 and int64 (q, k)."""


def plan_shards(part_rows: Sequence[tuple[str, int]], shards: int) -> list[list[str]]:
    """Consecutive runs of the dataset's parts, ``shards`` of them at most (never empty), of about equal rows."""
    total = sum(rows for _, rows in part_rows)
    groups: list[list[str]] = []
    done = 0
    for name, rows in part_rows:
        if not groups or (done >= total * len(groups) / shards and len(groups) < shards):
            groups.append([])
        groups[-1].append(name)
        done += rows
    return groups


def add_shard(trained: str, emb_dir: str, parts: list[str], out: str, queries: str, k: int) -> ShardResult:
    """Add the rows of ``parts`` to the trained, empty index in the file ``trained``, write it to ``out``, and
    return the exact top-``k`` of the recall queries (a .npy file) among those rows. Runs anywhere the files are."""
    index = faiss.read_index(trained)
    shard = load_dataset(emb_dir, columns=("id",), parts=parts)
    ops.add(index, shard.get_vectors(), shard.ids, progress=False)
    faiss.write_index(index, out)
    scores, rows = faiss.knn(
        np.load(queries), shard.get_vectors(), min(k, len(shard)), metric=faiss.METRIC_INNER_PRODUCT
    )
    return scores, shard.ids[rows]


def merge_top_k(results: Sequence[ShardResult], k: int) -> np.ndarray:
    """The ids of the ``k`` best scores per query over every shard's top-k."""
    scores = np.concatenate([s for s, _ in results], axis=1)
    ids = np.concatenate([i for _, i in results], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, 1)


def build_sharded_index_dir(
    emb_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    shards: int,
    factory: str = "auto",
    memory_budget: int | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    engine: str = "local",
    address: str | None = None,
    progress: bool | None = None,
    seed: int = 0,
) -> BuildSummary:
    """Build an inverted-file index over ``emb_dir`` in ``shards`` shards added independently (``engine``:
    ``local`` one after the other in this process, ``ray`` as Ray tasks) and merged on disk; returns what its
    ``index.json`` says. See the module's notes for exact search."""
    if shards < 1:
        raise IndexDirError(f"--shards must be at least 1, got {shards}")
    if not 0.0 < target_recall <= 1.0:
        raise IndexDirError(f"target recall must be in (0, 1], got {target_recall}")
    emb_dir, out = Path(emb_dir), prepare_output(out_dir)
    phases = Phases("index build")
    with phases("load"):
        dataset = load_dataset(emb_dir, columns=LOOKUP_COLUMNS, embeddings=False)
        part_rows = [(part.path.name, part.num_rows) for part in require_parts(emb_dir)]
    count, dim = len(dataset), dataset.meta.dim
    choice = (
        choose_factory(count, dim, memory_budget)
        if factory == "auto"
        else FactoryChoice(factory, "given with --factory")
    )
    check_factory(choice.factory, count)
    index, effective = ops.create(choice.factory, dim)
    if not _mergeable(index):
        if factory != "auto":
            raise IndexDirError(
                f"--shards needs an inverted file that FAISS can merge on disk (e.g. IVF4096,Flat or IVF4096,SQ8), "
                f"not --factory {factory}; leave --shards out to build it in one piece"
            )
        log.info("%s: exact search has no lists to merge on disk; built in one piece", choice.reason)
        return build_index_dir(emb_dir, out, factory, memory_budget, target_recall, progress)
    with index_lock(out):
        staging = out / STAGING
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            with phases("sample"):
                train_rows = np.sort(
                    np.random.default_rng(seed).choice(count, training_size(count, choice.factory), replace=False)
                )
                query_rows = np.sort(
                    np.random.default_rng(seed).choice(count, min(RECALL_QUERIES, count), replace=False)
                )
                sample, queries = _gather(emb_dir, part_rows, [train_rows, query_rows])
            with phases("train"):
                ops.train(index, sample)
                del sample
                no_map = faiss.DirectMap.NoMap  # type: ignore[attr-defined]  # faiss's stubs omit DirectMap
                faiss.extract_index_ivf(index).set_direct_map_type(no_map)  # built on demand: ops.reconstruct
                faiss.write_index(index, str(staging / "trained.faiss"))
                np.save(staging / "queries.npy", queries)
            groups = plan_shards(part_rows, shards)
            files = [str(staging / f"shard-{k:04d}.faiss") for k in range(len(groups))]
            with phases("add"):
                run = _run_on_ray(address) if engine == "ray" else _run_here
                results = run(
                    [
                        (str(staging / "trained.faiss"), str(emb_dir), parts, file, str(staging / "queries.npy"))
                        for parts, file in zip(groups, files)
                    ]
                )
            with phases("merge"):
                merge_ondisk(index, files, str(staging / IVFDATA_FILE))  # moved into the index's generation
            with phases("tune"):
                probe = RecallProbe(queries, merge_top_k(results, min(RECALL_K, count)))
                tuning = tune(index, probe, target_recall)
            built = BuiltIndex(
                index,
                effective,
                factory,
                choice.reason,
                tuning.params,
                tuning.recall,
                len(queries),
                target_recall,
                memory_budget,
                "mask",  # a merged index is read-only: removed ids are masked at search time
                phases.rounded(),
            )
            info = index_info(built, dataset, emb_dir) | {"storage": "ondisk", "shards": len(groups), "engine": engine}
            start = time.perf_counter()
            info = write_index_dir(out, info, lookup_of(dataset), index, ivfdata=staging / IVFDATA_FILE)
            log.info("index build: write took %.2f s", time.perf_counter() - start)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return BuildSummary(out, info)


def _mergeable(index: faiss.Index) -> bool:
    """Whether ``merge_ondisk`` can take this index type: an inverted file with plain array lists (not the
    blocked lists of fast-scan PQ), not wrapped in a refinement or an id map."""
    node = faiss.downcast_index(index)
    while isinstance(node, faiss.IndexPreTransform):
        node = faiss.downcast_index(node.index)
    if not isinstance(node, faiss.IndexIVF) or node.invlists is None:
        return False
    unmergeable = (faiss.IndexIVFPQR, faiss.IndexIVFPQFastScan, faiss.IndexIVFAdditiveQuantizerFastScan)
    return not isinstance(node, unmergeable) and isinstance(
        faiss.downcast_InvertedLists(node.invlists), faiss.ArrayInvertedLists
    )


def _gather(emb_dir: Path, part_rows: Sequence[tuple[str, int]], wanted: list[np.ndarray]) -> list[np.ndarray]:
    """The vectors at each array of sorted global ``wanted`` rows, read one part at a time (memory: one part)."""
    out = [[] for _ in wanted]  # type: list[list[np.ndarray]]
    start = 0
    for name, rows in part_rows:
        stop = start + rows
        picks = [r[(r >= start) & (r < stop)] - start for r in wanted]
        if any(p.size for p in picks):
            vectors = load_dataset(emb_dir, columns=("id",), parts=[name]).get_vectors()
            for chunks, pick in zip(out, picks):
                chunks.append(vectors[pick])
        start = stop
    return [np.ascontiguousarray(np.concatenate(chunks)) for chunks in out]


def _run_here(tasks: list[tuple[str, str, list[str], str, str]]) -> list[ShardResult]:
    """Shards one after the other in this process (FAISS's own threads use the cores)."""
    return [add_shard(*task, RECALL_K) for task in tasks]


def _run_on_ray(address: str | None) -> Callable[[list[tuple[str, str, list[str], str, str]]], list[ShardResult]]:
    """Shards as Ray tasks (one CPU each) on the cluster; the files must be on a file system every node shares."""

    def run(tasks: list[tuple[str, str, list[str], str, str]]) -> list[ShardResult]:
        from extractor.parallel.ray_cluster import connect, import_ray

        ray = import_ray()
        started = connect(ray, address)
        try:
            remote = ray.remote(num_cpus=1, max_retries=2)(add_shard)
            return ray.get([remote.remote(*task, RECALL_K) for task in tasks])
        finally:
            if started:
                ray.shutdown()

    return run
