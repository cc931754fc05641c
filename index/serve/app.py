"""The HTTP layer of ``alexfeat serve``: FastAPI routes over a ``SearchService``, JSON errors, the web page.

Every error a client can cause is a 4xx with a JSON body ``{"error": "..."}`` and never a traceback; the service
keeps serving. Uploads over the limit are refused with 413 by Starlette's ``RequestBodyLimitMiddleware`` (with or
without a Content-Length). Image decoding runs in worker threads (at most one per CPU), inference in the service's
one micro-batching thread, and queries by id or path on the event loop while they are cheap (in their own threads
once they are not), so they never wait behind images.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from extractor import __version__
from extractor.errors import AlexfeatError
from extractor.images.decode import DecodeError
from extractor.parallel.stream import usable_cpus
from index.expansion import DEFAULT_EXPAND
from index.serve.service import MAX_EXPAND, MAX_K, THUMB_SIZES, NotFound, SearchService, ServeConfig

log = logging.getLogger(__name__)

MULTIPART_SLACK = 64 * 1024  # room for the multipart boundaries and the form field k around the file
K = Annotated[int, Query(ge=1, le=MAX_K, description="Neighbours to return.")]
EXPAND_HELP = "Query expansion: neighbours averaged into the query first (as `search --expand`; 0: raw)."
EXPAND = Annotated[int, Query(ge=0, le=MAX_EXPAND, description=EXPAND_HELP)]


class HitOut(BaseModel):
    rank: int
    id: int
    path: str
    label: str | None
    score: float


class SearchOut(BaseModel):
    query: dict[str, Any]
    results: list[HitOut]
    took_ms: float


class ApiError(Exception):
    """An error answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CheapOnLoop:
    """Run a blocking query on the event loop while such queries are cheap, in a worker thread once they are not.

    Handing a query to a thread and back costs two thread wake-ups: 7-11 ms measured on a busy 2-core machine,
    against 0.3 ms for a query by id on a 1,500-item exact index. A large exact index can take tens of ms a query,
    which must not stall the loop. The choice follows a running mean of the queries' CPU time (of the thread that
    runs them: preemption on a busy machine does not count).
    """

    def __init__(self, limiter: anyio.CapacityLimiter, inline_below: float = 0.002) -> None:
        self.limiter = limiter
        self.inline_below = inline_below
        self.mean = 0.0

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.thread_time()
        try:
            return fn(*args)
        finally:
            self.mean = 0.8 * self.mean + 0.2 * (time.thread_time() - start)

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.mean < self.inline_below:
            return self._timed(fn, *args)
        return await anyio.to_thread.run_sync(self._timed, fn, *args, limiter=self.limiter)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    """``k: Input should be less than or equal to 1000`` from pydantic's error list."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


class DeclaredSizeLimit:
    """Answer 413 with the JSON error body at once when a request's Content-Length is over ``limit``.

    ``RequestBodyLimitMiddleware`` (inside this one) enforces the limit on the bytes received, chunked or not; for a
    declared oversize body it would answer in plain text."""

    def __init__(self, app: ASGIApp, limit: int, message: str) -> None:
        self.app, self.limit, self.message = app, limit, message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.limit:
                await _error(413, self.message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def page_html() -> str:
    """The web page (one static HTML + JS file shipped in the package)."""
    return resources.files("index.serve").joinpath("static/index.html").read_text("utf-8")


def create_app(source: ServeConfig | SearchService) -> FastAPI:
    """The FastAPI application. From a ``ServeConfig`` the index and model load in the lifespan (before a server
    answers); a ready ``SearchService`` is used as it is (and left open: its owner closes it)."""
    page = page_html()
    decode_limit = anyio.CapacityLimiter(usable_cpus())
    lookup_limit = anyio.CapacityLimiter(8)
    run_query = CheapOnLoop(lookup_limit)
    upload_limit = (source.config if isinstance(source, SearchService) else source).max_upload_bytes

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if isinstance(source, SearchService):
            app.state.service = source
            yield
            return
        service = await anyio.to_thread.run_sync(SearchService, source)
        app.state.service = service
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(service.close)

    app = FastAPI(
        title="alexfeat serve",
        version=__version__,
        description="Nearest-neighbour search over an alexfeat index: by uploaded image, indexed id or path.",
        lifespan=lifespan,
    )
    too_large = f"the upload is over the limit of {upload_limit / 2**20:g} MB (--max-upload-mb)"
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=upload_limit + MULTIPART_SLACK)
    app.add_middleware(DeclaredSizeLimit, limit=upload_limit + MULTIPART_SLACK, message=too_large)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 413:
            message = too_large
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    def service_of(request: Request) -> SearchService:
        return request.app.state.service

    async def lookup(fn: Any, *args: Any, query: bool = True) -> Any:
        """Run an id/path query (on the loop while cheap) or a thumbnail (in a worker thread); user errors become
        404/400."""
        try:
            if query:
                return await run_query(fn, *args)
            return await anyio.to_thread.run_sync(fn, *args, limiter=lookup_limit)
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        except AlexfeatError as exc:
            raise ApiError(400, str(exc)) from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/health", summary="200 once the index and the model are loaded")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/info", summary="The index (count, dim, factory, search parameters, recall@10) and the model")
    async def info(request: Request) -> dict[str, Any]:
        return service_of(request).info()

    @app.get("/api/search", response_model=SearchOut, summary="Neighbours of an indexed item, by id or by path")
    async def search_indexed(
        request: Request,
        id: Annotated[int | None, Query(description="An indexed id (the dataset's `id` column).")] = None,
        path: Annotated[str | None, Query(description="An indexed path, relative to the embedded folder.")] = None,
        k: K = 10,
        expand: EXPAND = DEFAULT_EXPAND,
    ) -> dict[str, Any]:
        start = time.perf_counter()
        if (id is None) == (path is None):
            raise ApiError(400, "give one of the query parameters id or path (or POST an image)")
        service = service_of(request)
        if id is not None:
            result = await lookup(service.search_id, id, k, expand)
        else:
            result = await lookup(service.search_path, path, k, expand)
        return {**result.as_dict(), "took_ms": round(1000 * (time.perf_counter() - start), 2)}

    @app.post("/api/search", response_model=SearchOut, summary="Neighbours of an uploaded image (multipart)")
    async def search_upload(
        request: Request,
        image: Annotated[UploadFile, File(description="The query image (JPEG, PNG, GIF, BMP, TIFF, WebP).")],
        k: Annotated[int, Form(ge=1, le=MAX_K, description="Neighbours to return.")] = 10,
        expand: Annotated[int, Form(ge=0, le=MAX_EXPAND, description=EXPAND_HELP)] = DEFAULT_EXPAND,
    ) -> dict[str, Any]:
        start = time.perf_counter()
        name = image.filename or "upload"
        data = await image.read()
        if len(data) > upload_limit:
            raise ApiError(413, too_large)
        service = service_of(request)
        try:
            pixels = await anyio.to_thread.run_sync(service.decode, data, limiter=decode_limit)
        except DecodeError as exc:
            raise ApiError(400, f"{name}: {exc} ({exc.kind})") from None
        hits = await asyncio.wrap_future(service.submit_image(pixels, k, expand))
        result = {"query": {"image": name}, "results": [hit.as_dict() for hit in hits]}
        return {**result, "took_ms": round(1000 * (time.perf_counter() - start), 2)}

    @app.get(
        "/api/thumbnail/{item_id}",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
        summary="A JPEG of an indexed image",
    )
    async def thumbnail(
        request: Request,
        item_id: int,
        size: Annotated[int, Query(ge=THUMB_SIZES[0], le=THUMB_SIZES[1], description="Longest side.")] = 256,
    ) -> Response:
        jpeg = await lookup(service_of(request).thumbnail, item_id, size, query=False)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return app
