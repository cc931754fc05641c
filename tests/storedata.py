"""Embeddings-dataset test data: model settings, rows as the embed pipeline gives them, and datasets written with
the real writer. The one helper module for store data (store, resume and index tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from extractor.store import EmbeddingMeta, open_for_writing

DIM = 8


def make_meta(dim: int = DIM, root: str | Path | None = "images", **changes: object) -> EmbeddingMeta:
    """Model settings of a small dataset (caffe AlexNet, pool5 average), with ``changes`` applied."""
    fields = {
        "arch": "caffe",
        "weights_source": "imagenet",
        "weights_sha256": "ab" * 32,
        "layer": "pool5",
        "pooling": "avg",
        "input_size": 227,
        "resize": "squash256-center227",
        "dim": dim,
        "root": None if root is None else str(root),
    }
    return EmbeddingMeta(**{**fields, **changes})


def make_rows(
    paths: list[str],
    dim: int = DIM,
    seed: int = 0,
    vectors: np.ndarray | None = None,
    digests: list[bytes] | None = None,
) -> dict[str, object]:
    """Rows as the embed pipeline gives them: every column but ``id``; random unit vectors unless ``vectors``."""
    if vectors is None:
        rng = np.random.default_rng(seed)
        vectors = rng.standard_normal((len(paths), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return {
        "path": paths,
        "label": [p.split("/")[0] if "/" in p else None for p in paths],
        "sha256": digests or [hashlib.sha256(p.encode()).digest() for p in paths],
        "size": np.arange(len(paths), dtype=np.int64) + 100,
        "mtime_ns": np.arange(len(paths), dtype=np.int64) + 1_700_000_000_000_000_000,
        "width": np.full(len(paths), 640, dtype=np.int32),
        "height": np.full(len(paths), 480, dtype=np.int32),
        "embedding": vectors,
    }


def write_dataset(
    out: Path,
    paths: list[str],
    meta: EmbeddingMeta | None = None,
    rows_per_part: int = 1000,
    seed: int = 0,
    vectors: np.ndarray | None = None,
    digests: list[bytes] | None = None,
) -> dict[str, object]:
    """Write (or append) rows for ``paths`` to the dataset ``out`` with the real writer; returns the rows.

    ``meta`` defaults to ``make_meta`` of the vectors' width."""
    meta = meta or make_meta(DIM if vectors is None else vectors.shape[1])
    rows = make_rows(paths, meta.dim, seed, vectors, digests)
    with open_for_writing(out, meta, rows_per_part=rows_per_part) as writer:
        writer.add(rows)
    return rows
