"""FAISS similarity search over alexfeat embeddings datasets.

The Python API, one call per command (names are imported on first use, so ``import index`` does not load
FAISS)::

    build_index_dir(emb_dir, out_dir, factory="auto", ..., augment=10) -> BuildSummary  # alexfeat index build
    add_to_index(index_dir, emb_dir) -> UpdateSummary                            # alexfeat index add
    remove_from_index(index_dir, ids=..., paths=...) -> UpdateSummary            # alexfeat index remove
    search_index(index_dir, images=/ids=/paths=/queries_dir=, k=10, expand=3) -> SearchResults  # alexfeat search
    Searcher(index_dir).search(...) / search_images / search_ids / search_paths / search_vectors  (reusable)
    dedup_dataset(emb_dir, threshold=0.95, out=None) -> DedupReport               # alexfeat dedup
    build_index(vectors, ids, factory="auto", ..., augment=0) -> BuiltIndex       # arrays in memory
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from extractor.util.lazy import lazy_exports

# public name -> module that defines it
_API: dict[str, str] = {
    "build_index": "index.build",
    "build_index_dir": "index.build",
    "BuildSummary": "index.build",
    "BuiltIndex": "index.build",
    "add_to_index": "index.update",
    "remove_from_index": "index.update",
    "UpdateSummary": "index.update",
    "Searcher": "index.search",
    "search_index": "index.search",
    "SearchResults": "index.search",
    "QueryResult": "index.search",
    "Hit": "index.search",
    "dedup_dataset": "index.dedup",
    "DedupReport": "index.dedup",
}
__all__ = list(_API)

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports on first use
    from index.build import BuildSummary, BuiltIndex, build_index, build_index_dir  # noqa: F401
    from index.dedup import DedupReport, dedup_dataset  # noqa: F401
    from index.search import Hit, QueryResult, Searcher, SearchResults, search_index  # noqa: F401
    from index.update import UpdateSummary, add_to_index, remove_from_index  # noqa: F401

__getattr__, __dir__ = lazy_exports(__name__, _API, globals())
