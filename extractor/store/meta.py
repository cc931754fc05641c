"""The dataset's record of :class:`~extractor.network.spec.EmbeddingMeta` (JSON under the Parquet schema metadata
key ``alexfeat``) and stable path ids."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import numpy as np

from extractor.errors import DatasetError
from extractor.network.spec import EmbeddingMeta

META_KEY = b"alexfeat"
_ID_MASK = (1 << 63) - 1


def encode_meta(meta: EmbeddingMeta) -> bytes:
    """``meta`` as the schema metadata value: JSON, keys sorted."""
    return json.dumps(meta.to_dict(), sort_keys=True).encode("utf-8")


def decode_meta(raw: str | bytes, where: str) -> EmbeddingMeta:
    """The metadata recorded in a file; malformed JSON or metadata raises DatasetError naming ``where``."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{where}: alexfeat metadata is not valid JSON ({exc})") from exc
    return EmbeddingMeta.from_dict(data, where)


def path_id(rel_path: str) -> int:
    """Stable 63-bit id of a relative path: the first 8 bytes of its UTF-8 sha256, big-endian, top bit cleared."""
    return int.from_bytes(hashlib.sha256(rel_path.encode("utf-8")).digest()[:8], "big") & _ID_MASK


def path_ids(rel_paths: Iterable[str]) -> np.ndarray:
    """``path_id`` of many paths, as an int64 array."""
    return np.fromiter((path_id(p) for p in rel_paths), dtype=np.int64)
