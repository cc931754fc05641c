"""FAISS similarity search over alexfeat embeddings datasets.

Public API (thin, over the FAISS mechanics in ``index.ops`` and ``index.tune``)::

    index.build.build_index(vectors, ids, factory="auto", ...) -> BuiltIndex      # arrays in memory
    index.build.build_index_dir(emb_dir, out_dir, factory="auto", ...) -> dict   # dataset -> index directory
    index.update.add_to_index(index_dir, emb_dir) / remove_from_index(index_dir, ids=..., paths=...)
    index.search.Searcher(index_dir).search_vectors / search_ids / search_paths / search_images
    index.dedup.dedup_dataset(emb_dir, threshold) -> DedupReport

Nothing is imported here, so ``alexfeat --help`` does not load FAISS.
"""
