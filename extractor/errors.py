"""Errors a user can cause: the CLI prints their message without a traceback."""

from __future__ import annotations


class AlexfeatError(Exception):
    """Base class for errors caused by input, arguments or the environment, with an actionable message."""


class WeightsError(AlexfeatError):
    """A weights source cannot be read, is unsafe, or does not fit the requested architecture."""


class DatasetError(AlexfeatError):
    """An embeddings dataset is missing, locked, corrupt or incompatible."""


class IndexDirError(AlexfeatError):
    """An index directory is missing, corrupt or incompatible with a query."""
