"""``alexfeat serve``: an index and its model loaded once, a JSON search API and a web page over HTTP.

Python API::

    from index.serve import ServeConfig, SearchService, create_app, serve
    serve(ServeConfig("idx/"), host="127.0.0.1", port=8080)       # what `alexfeat serve idx/` runs
    app = create_app(ServeConfig("idx/"))                          # an ASGI app for your own uvicorn
    service = SearchService(ServeConfig("idx/"))                   # the queries without HTTP

Needs the ``serve`` extra (FastAPI, uvicorn); nothing heavy is imported until a name is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SearchService", "ServeConfig", "create_app", "serve"]

_WHERE = {
    "SearchService": "index.serve.service",
    "ServeConfig": "index.serve.service",
    "create_app": "index.serve.app",
    "serve": "index.serve.server",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
