"""``alexfeat serve``: argument parsing only (FastAPI, FAISS and TensorFlow load inside the command)."""

from __future__ import annotations

import importlib.util

import click

from extractor.errors import AlexfeatError
from extractor.images.decode import DEFAULT_MAX_PIXELS


@click.command()
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--images-root",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder of the indexed images (thumbnails), when not where the index recorded it.",
)
@click.option(
    "--weights",
    default=None,
    metavar="PATH",
    help="Weights file for image queries when the recorded source is not on this machine.",
)
@click.option(
    "--max-upload-mb",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Larger uploads are refused (413).",
)
@click.option(
    "--max-pixels",
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    type=click.IntRange(1),
    help="Larger query images are refused (400), checked from the header.",
)
@click.option(
    "--max-batch",
    default=32,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Most image queries embedded in one forward pass.",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request.")
def serve(
    index_dir: str,
    host: str,
    port: int,
    images_root: str | None,
    weights: str | None,
    max_upload_mb: float,
    max_pixels: int,
    max_batch: int,
    access_log: bool,
) -> None:
    """Serve INDEX_DIR over HTTP: a search page at / and a JSON API (/api/search, /docs)."""
    missing = [name for name in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(name) is None]
    if missing:
        raise AlexfeatError(
            f"alexfeat serve needs {', '.join(missing)}: install the serve extra (pip install 'alexfeat[serve]')"
        )
    from index.serve.server import serve as run_server
    from index.serve.service import SearchService, ServeConfig

    def ready(service: SearchService, url: str) -> None:
        info = service.info()
        model = info["model"]
        click.echo(
            f"{index_dir}: {info['count']:,} images, {info['factory']} over {info['dim']}-d vectors; model "
            f"{model['arch']} {model['layer']}/{model['pooling']} ({model['weights_source']})\n"
            f"search page {url}  API docs {url}docs  (Ctrl+C stops)"
        )

    config = ServeConfig(index_dir, images_root, weights, max_upload_mb, max_pixels, max_batch)
    batches = run_server(config, host, port, access_log, on_ready=ready)
    queries = sum(size * count for size, count in batches.items())
    click.echo(f"stopped; served {queries:,} image queries in {sum(batches.values()):,} forward passes")
