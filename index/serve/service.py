"""What the HTTP service does, without HTTP: an index and its model loaded once, queries by id, path and image.

``SearchService`` holds a ``Searcher``, the FeatureExtractor the index was embedded with and one micro-batching
inference thread. Image queries are decoded by the caller's thread (``decode``) and embedded and searched in
batches (``submit_image``); queries by id or path never go through that thread.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from extractor.errors import AlexfeatError
from extractor.images.decode import DEFAULT_MAX_PIXELS
from index.expansion import DEFAULT_EXPAND
from index.search import Hit, QueryResult, Searcher, images_root
from index.serve.batcher import MicroBatcher

log = logging.getLogger(__name__)

MAX_K = 1000
MAX_EXPAND = 100  # query-expansion neighbours a request may ask for
THUMB_SIZES = (16, 1024)  # the smallest and largest thumbnail side served
THUMB_CACHE = 2048  # thumbnails kept in memory
INT64 = (-(2**63), 2**63 - 1)


class NotFound(AlexfeatError):
    """An id, path or image the index does not hold (HTTP 404)."""


@dataclass(frozen=True)
class ServeConfig:
    """The settings of ``alexfeat serve`` (``images_root`` and ``weights`` default to what the index recorded)."""

    index_dir: str | os.PathLike[str]
    images_root: str | os.PathLike[str] | None = None
    weights: str | None = None
    max_upload_mb: float = 20.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    precision: str = "auto"  # of the model for image queries: auto, float32 or bfloat16

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class ImageModel:
    """The index's embedding model for query images: file bytes → pixels, a batch of pixels → vectors.

    The one place that knows how a query image becomes a vector: decoded as embed decodes, then the Searcher's
    FeatureExtractor (the model recorded in the index, built once).
    """

    def __init__(self, searcher: Searcher, max_pixels: int) -> None:
        self.extractor = searcher.extractor
        self.max_pixels = max_pixels
        self.extractor.warm_up()

    def decode(self, data: bytes) -> np.ndarray:
        """RGB uint8 pixels at the network's input size; ``DecodeError`` for a bad or oversized image."""
        from extractor.images.decode import decode_image

        return decode_image(data, self.extractor.resize_spec, self.max_pixels).pixels

    def embed(self, pixels: list[np.ndarray]) -> np.ndarray:
        return self.extractor(np.stack(pixels))


class SearchService:
    """An index directory served: load once (index, model, inference thread), then query from many threads."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.searcher = Searcher(config.index_dir, config.weights, config.precision)
        self.images_root = self._find_images_root(config.images_root)
        self._path_to_id = self.searcher.dir.lookup.path_to_id()
        self.model = ImageModel(self.searcher, config.max_pixels)
        self.batcher: MicroBatcher[tuple[np.ndarray, int, int], list[Hit]] = MicroBatcher(
            self._embed_and_search, config.max_batch, config.batch_wait_ms / 1000, name="alexfeat-inference"
        )
        self.thumbnail = functools.lru_cache(maxsize=THUMB_CACHE)(self._thumbnail)

    def _find_images_root(self, override: str | os.PathLike[str] | None) -> str | None:
        """Where thumbnails are read from (a folder, shards' folder or object-store URL, through the dataset's
        source); None (with a warning) when the recorded folder is not on this machine."""
        if override is not None:
            return images_root(self.searcher, override)  # a wrong --images-root is an error
        try:
            return images_root(self.searcher)
        except AlexfeatError as exc:
            log.warning("no thumbnails: %s", exc)
            return None

    def close(self) -> None:
        self.batcher.close()

    @property
    def precision(self) -> str:
        """How image queries run, and why: e.g. ``bfloat16 (auto: CPU has amx_bf16/avx512_bf16)``."""
        return str(self.searcher.precision)

    def info(self) -> dict[str, Any]:
        """What ``/api/info`` shows: the index (count, dim, factory, tuning), the model, the limits and the
        inference batches run so far (size → count)."""
        info = self.searcher.dir.info
        return {
            "index": str(self.searcher.dir.path),
            "count": self.searcher.count,
            "dim": self.searcher.dim,
            "factory": info["factory"],
            "search_params": self.searcher.dir.search_params,
            "recall_at_10": info.get("recall_at_10"),
            "model": {k: v for k, v in self.model.extractor.spec.to_dict().items() if k != "root"},
            "images_root": str(self.images_root) if self.images_root else None,
            "max_k": MAX_K,
            "max_upload_mb": self.config.max_upload_mb,
            "max_pixels": self.config.max_pixels,
            "max_batch": self.config.max_batch,
            "batches": {str(size): n for size, n in sorted(self.batcher.batch_sizes().items())},
        }

    def search_id(self, item_id: int, k: int = 10, expand: int = DEFAULT_EXPAND) -> QueryResult:
        """Neighbours of an indexed item, as ``search --id`` finds them (``expand``: αQE neighbours, 0: raw);
        ``NotFound`` for an id the index does not hold."""
        if self._position(item_id) < 0:
            raise NotFound(f"id {item_id} is not in the index (ids are the dataset's `id` column)")
        return self.searcher.search_ids([item_id], _checked_k(k), expand=_checked_expand(expand))[0]

    def _position(self, item_id: int) -> int:
        """The lookup row of an id; -1 when the index does not hold it (ids beyond int64 included)."""
        if not INT64[0] <= item_id <= INT64[1]:
            return -1
        return int(self.searcher.dir.lookup.positions([item_id])[0])

    def search_path(self, path: str, k: int = 10, expand: int = DEFAULT_EXPAND) -> QueryResult:
        """Neighbours of an indexed item by its path relative to the embedded folder."""
        item_id = self._path_to_id.get(path)
        if item_id is None:
            raise NotFound(f"path {path!r} is not in the index (paths are relative to the embedded folder)")
        return self.search_id(item_id, k, expand)

    def decode(self, data: bytes) -> np.ndarray:
        """Decode an uploaded image (in the caller's thread); ``DecodeError`` for bad input."""
        return self.model.decode(data)

    def submit_image(self, pixels: np.ndarray, k: int = 10, expand: int = DEFAULT_EXPAND) -> Future[list[Hit]]:
        """Queue decoded pixels for the next inference batch; the future gets the ``k`` nearest hits."""
        return self.batcher.submit((pixels, _checked_k(k), _checked_expand(expand)))

    def search_image(self, data: bytes, k: int = 10, name: str = "upload", expand: int = DEFAULT_EXPAND) -> QueryResult:
        """Decode, embed (batched with concurrent queries) and search one image file's bytes; blocks."""
        hits = self.submit_image(self.decode(data), k, expand).result()
        return QueryResult({"image": name}, hits)

    def _embed_and_search(self, items: list[tuple[np.ndarray, int, int]]) -> list[list[Hit]]:
        """One forward pass for the batch, then one search per distinct ``expand`` among its queries."""
        start = time.perf_counter()
        vectors = self.model.embed([pixels for pixels, _, _ in items])
        out: list[list[Hit]] = [[] for _ in items]
        for expand in sorted({e for _, _, e in items}):
            rows = [i for i, (_, _, e) in enumerate(items) if e == expand]
            found = self.searcher.search_vectors(vectors[rows], max(items[i][1] for i in rows), expand=expand)
            for i, hits in zip(rows, found):
                out[i] = hits[: items[i][1]]
        log.debug("batch of %d in %.1f ms", len(items), 1000 * (time.perf_counter() - start))
        return out

    def _thumbnail(self, item_id: int, size: int) -> bytes:
        """A JPEG of an indexed image, at most ``size`` pixels a side, read through the dataset's source (a folder,
        a tar shard's member, an object); only images of the index are read. An image the source cannot give now
        (deleted, the store unreachable) is NotFound with the reason."""
        from extractor.images.sources import read_stored
        from index.html import thumbnail_jpeg

        if not THUMB_SIZES[0] <= size <= THUMB_SIZES[1]:
            raise AlexfeatError(f"size must be between {THUMB_SIZES[0]} and {THUMB_SIZES[1]}, got {size}")
        lookup = self.searcher.dir.lookup
        pos = self._position(item_id)
        if pos < 0:
            raise NotFound(f"id {item_id} is not in the index")
        if self.images_root is None:
            raise NotFound("the images folder recorded in the index is not on this machine: restart with --images-root")
        (data,) = read_stored(self.images_root, [lookup.paths[pos]])
        if isinstance(data, OSError):
            raise NotFound(
                f"the image of id {item_id} ({lookup.paths[pos]}) cannot be read from {self.images_root}: {data}"
            )
        jpeg = thumbnail_jpeg(data, size, name=lookup.paths[pos])
        if jpeg is None:
            raise NotFound(f"the image of id {item_id} ({lookup.paths[pos]}) cannot be read under {self.images_root}")
        return jpeg


def _checked_expand(expand: int) -> int:
    if not 0 <= expand <= MAX_EXPAND:
        raise AlexfeatError(f"expand must be between 0 and {MAX_EXPAND}, got {expand}")
    return expand


def _checked_k(k: int) -> int:
    if not 1 <= k <= MAX_K:
        raise AlexfeatError(f"k must be between 1 and {MAX_K}, got {k}")
    return k
