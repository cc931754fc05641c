"""Build an index: on vectors in memory (``build_index``) or from an embeddings dataset into a directory
(``build_index_dir``). Phases: choose the factory, train on a sample, add with ids, tune to the target recall.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from extractor import __version__
from extractor.errors import IndexDirError
from extractor.store import Dataset, load_dataset
from extractor.util.timing import Phases
from index import ops
from index.expansion import ALPHA, DEFAULT_AUGMENT, augment_database, check_count
from index.factory import (
    EXACT_MAX,
    FactoryChoice,
    check_factory,
    choose_factory,
    training_size,
)
from index.indexdir import LOOKUP_COLUMNS, Lookup, index_lock, prepare_output, write_index_dir
from index.tune import recall_probe, tune

log = logging.getLogger(__name__)

DEFAULT_TARGET_RECALL = 0.95


@dataclass
class BuiltIndex:
    """A trained, filled and tuned index with what ``index.json`` records about it."""

    index: faiss.Index
    factory: str  # rebuilds the index with faiss.index_factory (``IDMap2,`` included where used)
    factory_requested: str
    factory_reason: str
    search_params: dict[str, int]
    recall_at_10: float
    recall_queries: int
    target_recall: float
    memory_budget: int | None
    removal: str  # "native": remove_ids works; "mask": removed ids are filtered at search time
    phase_seconds: dict[str, float]
    augment: int = 0  # DBA: stored vectors are weighted sums of their `augment` nearest neighbours (0: raw)
    alpha: float = ALPHA  # the similarity exponent of the augmentation

    @property
    def build_seconds(self) -> float:
        return round(sum(self.phase_seconds.values()), 3)

    def info(self) -> dict[str, Any]:
        """The ``index.json`` fields that describe the index itself (the caller adds the dataset's)."""
        return {
            "factory": self.factory,
            "metric": ops.METRIC,
            "dim": int(self.index.d),
            "search_params": self.search_params,
            "recall_at_10": round(self.recall_at_10, 4),
            "build_seconds": self.build_seconds,
            "factory_requested": self.factory_requested,
            "factory_reason": self.factory_reason,
            "target_recall": self.target_recall,
            "recall_queries": self.recall_queries,
            "memory_budget_bytes": self.memory_budget,
            "removal": self.removal,
            "index_type": ops.describe(self.index),
            "phase_seconds": self.phase_seconds,
            "augment": self.augment,
            "alpha": self.alpha,
        }


@dataclass(frozen=True)
class BuildSummary:
    """An index directory just written, and its ``index.json`` content (``info``)."""

    path: Path
    info: dict[str, Any]

    @property
    def factory(self) -> str:
        return self.info["factory"]

    @property
    def count(self) -> int:
        return self.info["count"]

    @property
    def dim(self) -> int:
        return self.info["dim"]

    @property
    def recall_at_10(self) -> float:
        return self.info["recall_at_10"]

    @property
    def search_params(self) -> dict[str, int]:
        return self.info["search_params"]

    @property
    def build_seconds(self) -> float:
        return self.info["build_seconds"]


def _check_inputs(vectors: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = ops.as_matrix(vectors)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(x) == 0:
        raise IndexDirError("cannot index an empty dataset: it holds no vectors")
    if ids.shape != (len(x),):
        raise IndexDirError(f"{len(ids)} ids for {len(x)} vectors")
    if np.unique(ids).size != ids.size:
        raise IndexDirError("ids must be unique")
    return x, ids


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    factory: str = "auto",
    memory_budget: int | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    seed: int = 0,
    progress: bool | None = None,
    exact_max: int = EXACT_MAX,
    augment: int = 0,
    alpha: float = ALPHA,
) -> BuiltIndex:
    """Choose (``auto``) or check the factory, train on a sample, add ``vectors`` under ``ids``, then tune the
        search parameters to reach ``target_recall`` recall@10 at the best speed.

        ``vectors`` are L2-normalised float32 (N, dim); the metric is inner product, i.e. cosine similarity.
        ``auto`` searches exactly up to ``exact_max`` vectors. ``augment`` > 1 stores each vector as the
        similarity^``alpha``-weighted sum of its ``augment`` nearest neighbours, itself included (DBA), found with
        the tuned index itself; the index is then filled with those and tuned again. 0 or 1 (the default here; the
    command's default is ``build_index_dir``'s) stores them as given.
    """
    if not 0.0 < target_recall <= 1.0:
        raise IndexDirError(f"target recall must be in (0, 1], got {target_recall}")
    augment = check_count(augment, "augment")
    x, ids = _check_inputs(vectors, ids)
    phases = Phases("index build")
    with phases("choose"):
        choice = (
            choose_factory(len(x), x.shape[1], memory_budget, exact_max)
            if factory == "auto"
            else FactoryChoice(factory, "given with --factory")
        )
        check_factory(choice.factory, len(x))
        index, effective = ops.create(choice.factory, x.shape[1])
    log.info("index build: %s (%s)", effective, choice.reason)
    with phases("train"):
        n_train = training_size(len(x), choice.factory)
        rows = np.sort(np.random.default_rng(seed).choice(len(x), n_train, replace=False))
        ops.train(index, x[rows] if n_train < len(x) else x)
    with phases("add"):
        ops.add(index, x, ids, progress)
    with phases("tune"):
        probe = recall_probe(x, ids, seed=seed)
        tuning = tune(index, probe, target_recall)
    if augment > 1:
        with phases("augment"):
            x = augment_database(index, x, ids, min(augment, len(x)), alpha, tuning.params)
            index.reset()
            ops.add(index, x, ids, progress)
        with phases("tune"):
            probe = recall_probe(x, ids, seed=seed)
            tuning = tune(index, probe, target_recall)
    removal = "native" if ops.can_remove(index) else "mask"
    return BuiltIndex(
        index,
        effective,
        factory,
        choice.reason,
        tuning.params,
        tuning.recall,
        len(probe.queries),
        target_recall,
        memory_budget,
        removal,
        phases.rounded(),
        augment if augment > 1 else 0,
        alpha,
    )


def lookup_of(dataset: Dataset, rows: np.ndarray | None = None) -> Lookup:
    """The lookup rows (id, path, label, sha256) of ``dataset``, all or those at ``rows``."""
    pick = range(len(dataset)) if rows is None else rows.tolist()
    paths, labels, sha256 = dataset.get_paths(), dataset.get_labels(), dataset.get_sha256()
    return Lookup.from_rows(
        dataset.ids if rows is None else dataset.ids[rows],
        [paths[i] for i in pick],
        [labels[i] for i in pick],
        [sha256[i] for i in pick],
    )


def index_info(built: BuiltIndex, dataset: Dataset, emb_dir: Path) -> dict[str, Any]:
    """The full ``index.json`` content of ``built`` made from ``dataset``."""
    info = built.info()
    info["embedding_metadata"] = dataset.meta.to_dict()
    info["source"] = str(emb_dir.resolve())
    info["package_version"] = __version__
    info["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return info


def build_index_dir(
    emb_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    factory: str = "auto",
    memory_budget: int | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    progress: bool | None = None,
    augment: int = DEFAULT_AUGMENT,
) -> BuildSummary:
    """Build an index over an embeddings dataset and write it to ``out_dir``; returns what ``index.json`` says.
    ``augment`` > 1 applies database-side augmentation over that many neighbours (see :func:`build_index`);
    the dataset itself is never changed."""
    augment = check_count(augment, "augment")  # before anything is created
    emb_dir, out = Path(emb_dir), prepare_output(out_dir)
    with index_lock(out):
        start = time.perf_counter()
        dataset = load_dataset(emb_dir, columns=LOOKUP_COLUMNS)
        load_seconds = time.perf_counter() - start
        built = build_index(
            dataset.get_vectors(),
            dataset.ids,
            factory,
            memory_budget,
            target_recall,
            progress=progress,
            augment=augment,
        )
        built.phase_seconds = {"load": round(load_seconds, 3)} | built.phase_seconds
        info = index_info(built, dataset, emb_dir)
        start = time.perf_counter()
        info = write_index_dir(out, info, lookup_of(dataset), built.index)
        log.info("index build: write took %.2f s", time.perf_counter() - start)
    return BuildSummary(out, info)
