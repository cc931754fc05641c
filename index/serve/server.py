"""Run the service with uvicorn: bind the port first (a busy port fails at once), load the index and the model,
then answer; Ctrl+C stops it."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable

from extractor.errors import AlexfeatError
from index.serve.service import SearchService, ServeConfig


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: a free one), not listening yet: until the server starts,
    connections are refused rather than left waiting."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise AlexfeatError(
            f"cannot resolve --host {host!r} ({exc.strerror}); use an address such as 127.0.0.1"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise AlexfeatError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(
    config: ServeConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    access_log: bool = False,
    on_ready: Callable[[SearchService, str], None] | None = None,
) -> Counter[int]:
    """Serve ``config.index_dir`` on ``host:port`` until interrupted (Ctrl+C).

    ``on_ready(service, url)`` is called once the index and the model are loaded, just before the port starts
    answering. Returns the sizes of the inference batches run (size → count). FAISS runs single-threaded in this
    process: concurrent requests already run in parallel, and an OpenMP team per small query costs more than it
    gives (9.5 → 0.8 ms per query by id measured on a busy 2-core machine).
    """
    import faiss
    import uvicorn

    from index.serve.app import create_app

    sock = bind(host, port)
    faiss.omp_set_num_threads(1)
    try:
        service = SearchService(config)
        try:
            if on_ready is not None:
                on_ready(service, url_of(sock))
            server = uvicorn.Server(
                uvicorn.Config(create_app(service), log_level="info", access_log=access_log, lifespan="on")
            )
            try:
                server.run(sockets=[sock])
            except KeyboardInterrupt:  # uvicorn raises the signal again once it has shut down
                pass
        finally:
            service.close()
        return service.batcher.batch_sizes()
    finally:
        sock.close()
