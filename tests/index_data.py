"""Small real embeddings datasets for the index tests: clustered unit vectors written with the real DatasetWriter."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from extractor.store import DatasetWriter, EmbeddingMeta, path_ids

DIM = 32


def make_meta(dim: int = DIM, root: str | Path | None = "images", **changes: object) -> EmbeddingMeta:
    fields = {
        "arch": "torchvision",
        "weights_source": "random",
        "weights_sha256": "cd" * 32,
        "layer": "pool5",
        "pooling": "avg",
        "input_size": 224,
        "resize": "shorter256-center224",
        "dim": dim,
        "root": None if root is None else str(root),
    }
    return EmbeddingMeta(**{**fields, **changes})


def clustered(n: int, dim: int = DIM, clusters: int = 8, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    """``n`` L2-normalised float32 vectors around ``clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def paths_for(n: int, start: int = 0, classes: Sequence[str] = ("cat", "dog", "owl")) -> list[str]:
    return [f"{classes[i % len(classes)]}/img_{i:05d}.jpg" for i in range(start, start + n)]


def write_dataset(
    out: Path,
    paths: list[str],
    vectors: np.ndarray,
    meta: EmbeddingMeta | None = None,
    digests: list[bytes] | None = None,
    rows_per_part: int = 1000,
) -> np.ndarray:
    """Write rows for ``paths`` with ``vectors`` to the dataset ``out`` (appending if it exists); returns ids."""
    n = len(paths)
    rows = {
        "path": paths,
        "label": [p.split("/")[0] if "/" in p else None for p in paths],
        "sha256": digests or [hashlib.sha256(p.encode()).digest() for p in paths],
        "size": np.full(n, 1000, dtype=np.int64),
        "mtime_ns": np.full(n, 1_700_000_000_000_000_000, dtype=np.int64),
        "width": np.full(n, 64, dtype=np.int32),
        "height": np.full(n, 48, dtype=np.int32),
        "embedding": vectors,
    }
    with DatasetWriter(out, meta or make_meta(vectors.shape[1]), rows_per_part=rows_per_part) as writer:
        writer.add(rows)
    return path_ids(paths)


def replace_rows(out: Path, paths: list[str], vectors: np.ndarray, meta: EmbeddingMeta | None = None) -> None:
    """Re-embed ``paths`` with new vectors and new file contents (sha256), as a rerun after edits does."""
    with DatasetWriter(out, meta or make_meta(vectors.shape[1])) as writer:
        writer.drop_ids(path_ids(paths))
    write_dataset(out, paths, vectors, meta, digests=[hashlib.sha256(b"edited " + p.encode()).digest() for p in paths])
