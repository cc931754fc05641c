"""The one description of an embedding: :class:`EmbeddingMeta`, the settings that made a set of vectors.

:class:`extractor.network.features.FeatureExtractor` produces it (``extractor.spec``); the embed job adds the
images root; the dataset (Parquet schema metadata ``alexfeat``), the index (``index.json``) and head directories
(``metrics.json``) record it as its :meth:`~EmbeddingMeta.to_dict`, and read it back with
:meth:`~EmbeddingMeta.from_dict`. JSON exists only in those files; code passes and compares the object.

A field is a compatibility field (two sets of vectors can be mixed or compared only when they agree on all of
them) unless its metadata says ``compared=False``. A new field is one line with a default: files written before
it existed read back with that default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from extractor import __version__
from extractor.errors import DatasetError

FORMAT_VERSION = 1
_NOT_COMPARED = {"compared": False}


@dataclass(frozen=True)
class EmbeddingMeta:
    """The settings that define an embedding (and, for a dataset, where its images came from)."""

    arch: str
    weights_source: str = field(metadata=_NOT_COMPARED)  # "imagenet", "random" or the path given
    weights_sha256: str
    layer: str
    pooling: str  # "none" for the fc layers
    input_size: int
    resize: str
    dim: int
    tta: str = "none"  # test-time augmentation: "none", or "flip" (the mean of the image's and its mirror's vectors)
    root: str | None = field(default=None, metadata=_NOT_COMPARED)  # the images folder (absolute), once embedded
    package_version: str = field(default=__version__, metadata=_NOT_COMPARED)
    format_version: int = field(default=FORMAT_VERSION, metadata=_NOT_COMPARED)

    def __post_init__(self) -> None:
        for name in ("dim", "input_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")

    @classmethod
    def compat_fields(cls) -> tuple[str, ...]:
        """The fields that must agree for two embeddings to be compatible (never paths or versions)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("compared", True))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (what the files record)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "embedding metadata") -> EmbeddingMeta:
        """Read a recorded dict: a field it lacks takes its default (files older than the field), unknown keys
        are ignored; a missing required field, a bad value or a newer format raises DatasetError naming ``where``."""
        if not isinstance(data, Mapping) or not isinstance(data.get("format_version"), int):
            raise DatasetError(f"{where}: alexfeat metadata has no format_version")
        if data["format_version"] > FORMAT_VERSION:
            raise DatasetError(
                f"{where} was written by a newer alexfeat (format {data['format_version']}; this "
                f"version reads format {FORMAT_VERSION}); upgrade alexfeat to read it"
            )
        fields = dataclasses.fields(cls)
        missing = [
            f.name
            for f in fields
            if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise DatasetError(f"{where}: alexfeat metadata lacks {', '.join(missing)}")
        try:
            return cls(**{f.name: data[f.name] for f in fields if f.name in data})
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: alexfeat metadata is invalid ({exc})") from exc

    def differences(self, other: EmbeddingMeta) -> list[str]:
        """``"field: mine != other's"`` for each compatibility field that differs."""
        return [
            f"{name}: {getattr(self, name)} != {getattr(other, name)}"
            for name in self.compat_fields()
            if getattr(self, name) != getattr(other, name)
        ]

    def check_compatible(self, other: EmbeddingMeta, what: str, hint: str = "") -> None:
        """Raise DatasetError ``"{what}: <differences>. {hint}"`` unless ``other`` has the same compatibility fields."""
        diffs = self.differences(other)
        if diffs:
            raise DatasetError(f"{what}: {'; '.join(diffs)}." + (f" {hint}" if hint else ""))


COMPAT_FIELDS = EmbeddingMeta.compat_fields()
