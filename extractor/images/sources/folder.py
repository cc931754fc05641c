"""The folder source: the images under a local (or mounted) folder, walked by :func:`~extractor.images.discover`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from extractor.images.discover import FileEntry, discover
from extractor.images.sources.base import OnError


@dataclass(frozen=True)
class FolderSource:
    """Every image under ``root`` (recursive, sorted, hidden entries skipped; label: the first folder);
    ``follow_outside``: follow symbolic links whose target lies outside ``root``."""

    root: str
    follow_outside: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", os.path.abspath(self.root))
        discover(self.root)  # a missing or unreadable folder fails here, before any work

    def list(self, on_error: OnError | None = None) -> Iterator[FileEntry]:
        return discover(self.root, on_error, self.follow_outside)
