"""The dataset's model settings (``EmbeddingMeta``, schema metadata key ``alexfeat``) and stable path ids."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from extractor import __version__
from extractor.errors import DatasetError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
COMPAT_FIELDS = ("arch", "weights_sha256", "layer", "pooling", "input_size", "resize", "dim")
META_KEY = b"alexfeat"
_ID_MASK = (1 << 63) - 1


@dataclass(frozen=True)
class EmbeddingMeta:
    """The settings that produced a dataset's embeddings (schema metadata ``alexfeat``, JSON)."""

    arch: str
    weights_source: str
    weights_sha256: str
    layer: str
    pooling: str | None
    input_size: int
    resize: str
    dim: int
    root: str
    package_version: str = __version__
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in ("dim", "input_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "embedding metadata") -> EmbeddingMeta:
        """Parse metadata JSON; anything malformed or from a newer format raises DatasetError naming ``where``."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{where}: alexfeat metadata is not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("format_version"), int):
            raise DatasetError(f"{where}: alexfeat metadata has no format_version")
        if data["format_version"] > FORMAT_VERSION:
            raise DatasetError(
                f"{where} was written by a newer alexfeat (format {data['format_version']}; this "
                f"version reads format {FORMAT_VERSION}); upgrade alexfeat to read it"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in data]
        if missing:
            raise DatasetError(f"{where}: alexfeat metadata lacks {', '.join(missing)}")
        try:
            return cls(**{name: data[name] for name in names})
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: alexfeat metadata is invalid ({exc})") from exc

    def differences(self, other: EmbeddingMeta) -> list[str]:
        """``"field: mine != other's"`` for each compatibility field that differs (paths and versions never count)."""
        return [
            f"{name}: {getattr(self, name)} != {getattr(other, name)}"
            for name in COMPAT_FIELDS
            if getattr(self, name) != getattr(other, name)
        ]

    def check_compatible(self, other: EmbeddingMeta, what: str, hint: str = "") -> None:
        """Raise DatasetError ``"{what}: <differences>. {hint}"`` unless ``other`` has the same compatibility fields."""
        diffs = self.differences(other)
        if diffs:
            raise DatasetError(f"{what}: {'; '.join(diffs)}." + (f" {hint}" if hint else ""))


def path_id(rel_path: str) -> int:
    """Stable 63-bit id of a relative path: the first 8 bytes of its UTF-8 sha256, big-endian, top bit cleared."""
    return int.from_bytes(hashlib.sha256(rel_path.encode("utf-8")).digest()[:8], "big") & _ID_MASK


def path_ids(rel_paths: Iterable[str]) -> np.ndarray:
    """``path_id`` of many paths, as an int64 array."""
    return np.fromiter((path_id(p) for p in rel_paths), dtype=np.int64)
