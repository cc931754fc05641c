"""Metadata as alexfeat 0.1.0 wrote it (format 1), to prove that files written before a field was added still load."""

from __future__ import annotations

import json
from typing import Any

from extractor.network.spec import EmbeddingMeta

# Exactly the keys that format 1 has always recorded (a field added later must not appear here).
FORMAT1_KEYS = (
    "arch",
    "dim",
    "format_version",
    "input_size",
    "layer",
    "package_version",
    "pooling",
    "resize",
    "root",
    "weights_sha256",
    "weights_source",
)


def format1_record(meta: EmbeddingMeta) -> dict[str, Any]:
    """The dict a format-1 file records for ``meta``: the format-1 keys only, sorted, version 0.1.0."""
    return {key: "0.1.0" if key == "package_version" else getattr(meta, key) for key in FORMAT1_KEYS}


def format1_json(meta: EmbeddingMeta) -> bytes:
    """The Parquet schema metadata bytes that alexfeat 0.1.0 wrote for ``meta``."""
    return json.dumps(format1_record(meta), sort_keys=True).encode("utf-8")
