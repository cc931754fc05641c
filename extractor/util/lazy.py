"""Package roots that export their public names lazily, so importing the package loads nothing heavy."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, api: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of a package whose ``api`` (public name -> the module that
    defines it) is imported on first use; ``namespace`` is the package's ``globals()``, where a name is kept once
    imported (later lookups do not reach ``__getattr__``)."""

    def getattr_(name: str) -> Any:
        if name in api:
            value = getattr(importlib.import_module(api[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(api))

    return getattr_, dir_
