"""Small real embeddings datasets for the index tests: clustered unit vectors written with the real DatasetWriter."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from extractor.store import DatasetWriter, EmbeddingMeta, path_ids
from tests import storedata

DIM = 32


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
    storedata.write_dataset(out, paths, meta, rows_per_part, vectors=vectors, digests=digests)
    return path_ids(paths)


def replace_rows(out: Path, paths: list[str], vectors: np.ndarray, meta: EmbeddingMeta | None = None) -> None:
    """Re-embed ``paths`` with new vectors and new file contents (sha256), as a rerun after edits does."""
    with DatasetWriter(out, meta or storedata.make_meta(vectors.shape[1])) as writer:
        writer.drop_ids(path_ids(paths))
    write_dataset(out, paths, vectors, meta, digests=[hashlib.sha256(b"edited " + p.encode()).digest() for p in paths])


def stored_ids(index: faiss.Index) -> np.ndarray:
    """The ids stored in a FAISS ``index`` (masked ones included), in no particular order: what the file holds."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.vector_to_array(inner.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    invlists = ivf.invlists
    assert invlists is not None
    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(k), invlists.list_size(k)).copy()
        for k in range(ivf.nlist)
        if invlists.list_size(k)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)
