"""``alexfeat index build/add/remove``, ``alexfeat search``, ``alexfeat dedup`` and ``alexfeat serve``: argument
parsing only.

FAISS, the index modules, TensorFlow and the web server are imported inside the commands, so ``alexfeat --help``
stays fast.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

import click

from extractor.errors import AlexfeatError
from extractor.images.decode import DEFAULT_MAX_PIXELS
from extractor.network.precision import PRECISION_HELP, PRECISIONS
from extractor.util.cli_options import output_dir_option, progress_option, recorded_weights_option, warn
from extractor.util.textsafe import text_cell

_DIR = click.Path(file_okay=False)
# the defaults of index.expansion (DEFAULT_AUGMENT, DEFAULT_EXPAND), kept here so `--help` does not load FAISS;
# tests/index/test_expansion.py checks that they agree
DEFAULT_AUGMENT = 10
DEFAULT_EXPAND = 3
_ID = click.IntRange(-(2**63), 2**63 - 1)  # the dataset's ids are int64


def _memory_budget(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from index.factory import default_memory_budget, parse_memory_budget

    if value is None:
        return default_memory_budget()
    try:
        return parse_memory_budget(value)
    except AlexfeatError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group("index")
def index_group() -> None:
    """Build and maintain FAISS indexes over embeddings datasets."""


@index_group.command()
@click.argument("emb_dir", type=_DIR)
@output_dir_option("Index directory (created).")
@click.option(
    "--factory",
    default="auto",
    show_default=True,
    metavar="auto|FACTORY",
    help="auto, or a FAISS index_factory string such as Flat, IVF1024,Flat, HNSW32, IVF4096,SQ8.",
)
@click.option(
    "--memory-budget",
    default=None,
    callback=_memory_budget,
    metavar="SIZE",
    help="Memory the index may use, e.g. 4G or 512M (auto picks compressed codes to fit). "
    "Default: half the machine's memory.",
)
@click.option(
    "--target-recall",
    default=0.95,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="recall@10 the search parameters (nprobe, efSearch) are tuned to reach.",
)
@click.option(
    "--augment",
    default=None,
    type=click.IntRange(0),
    metavar="K",
    help="Database-side augmentation: store each vector as the similarity^3-weighted sum of its K nearest "
    f"neighbours (itself included); better search. 0: the raw vectors. The dataset is not changed. Default: "
    f"{DEFAULT_AUGMENT} (0 with --shards, which cannot augment).",
)
@click.option(
    "--shards",
    default=None,
    type=click.IntRange(1),
    help="Train once, add the dataset in N shards independently, merge them on disk into index.ivfdata "
    "(read-only; for indexes larger than memory). Needs an inverted file (IVF...); below the IVF threshold, "
    "auto builds the exact index in one piece.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="With --shards: add the shards here, one after the other, or as Ray tasks (files on a shared file system).",
)
@click.option("--address", default=None, metavar="auto|ray://HOST:10001", help="With --engine ray: the cluster.")
@progress_option
def build(
    emb_dir: str,
    out_dir: str,
    factory: str,
    memory_budget: int | None,
    target_recall: float,
    augment: int | None,
    shards: int | None,
    engine: str,
    address: str | None,
    progress: bool | None,
) -> None:
    """Build a FAISS index over the embeddings dataset EMB_DIR into OUT_DIR."""
    from index.build import build_index_dir

    if shards is None and (engine != "local" or address):
        raise click.UsageError("--engine and --address only apply with --shards")
    if shards is not None and augment is not None and augment > 1:
        raise click.UsageError("--augment needs an index built in one piece: leave it out with --shards")
    if shards is None:
        built = build_index_dir(
            emb_dir,
            out_dir,
            factory,
            memory_budget,
            target_recall,
            progress,
            DEFAULT_AUGMENT if augment is None else augment,
        )
    else:
        from index.sharded import build_sharded_index_dir

        built = build_sharded_index_dir(
            emb_dir, out_dir, shards, factory, memory_budget, target_recall, engine, address, progress
        )
    sharded = f" in {built.info['shards']} shards merged on disk" if built.info.get("storage") == "ondisk" else ""
    augmented = f" augmented over {built.info['augment']} neighbours" if built.info.get("augment") else ""
    click.echo(
        f"{out_dir}: {built.factory} over {built.count:,} {built.dim}-d vectors{sharded}{augmented}, "
        f"recall@10 {built.recall_at_10:.3f} with {_params(built.search_params)}, "
        f"built in {built.build_seconds:.1f} s"
    )


def _params(params: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "exact search"


@index_group.command()
@click.argument("index_dir", type=_DIR)
@click.argument("emb_dir", type=_DIR)
@progress_option
def add(index_dir: str, emb_dir: str, progress: bool | None) -> None:
    """Add EMB_DIR's new rows to INDEX_DIR and replace rows whose image changed (sha256)."""
    from index.update import add_to_index

    click.echo(add_to_index(index_dir, emb_dir, progress).line(index_dir))


@index_group.command()
@click.argument("index_dir", type=_DIR)
@click.option("--id", "ids", multiple=True, type=_ID, metavar="N", help="Id to remove (repeatable).")
@click.option(
    "--path",
    "paths",
    multiple=True,
    metavar="REL",
    help="Path to remove, relative to the embedded folder (repeatable).",
)
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(dir_okay=False, exists=True),
    help="File of ids and/or paths, one a line.",
)
def remove(index_dir: str, ids: tuple[int, ...], paths: tuple[str, ...], from_file: str | None) -> None:
    """Remove items from INDEX_DIR by id or path; they never come back in search results."""
    from index.update import remove_from_index

    if not (ids or paths or from_file):
        raise click.UsageError("name what to remove with --id, --path or --from-file")
    click.echo(remove_from_index(index_dir, ids, paths, from_file).line(index_dir))


# ---------------------------------------------------------------------------------------------------- search


def _print_table(results: list[Any], out: Any) -> None:
    """The results as a plain-text table; names escaped so that each hit is one line (``text_cell``)."""
    for result in results:
        query = result.query
        title = f"image {query['image']}" if "image" in query else f"id {query['id']}  {query['path']}"
        click.echo(f"query: {text_cell(title)}", file=out)
        click.echo(f"{'rank':>4}  {'id':>19}  {'score':>6}  {'label':<16}  path", file=out)
        for hit in result.hits:
            label = text_cell(hit.label or "-")
            click.echo(f"{hit.rank:>4}  {hit.id:>19}  {hit.score:>6.3f}  {label:<16}  {text_cell(hit.path)}", file=out)
        click.echo("", file=out)


@click.command()
@click.argument("index_dir", type=_DIR)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True),
    help="Query image file (repeatable); embedded with the model recorded in the index.",
)
@click.option("--id", "ids", multiple=True, type=_ID, metavar="N", help="Query by an indexed id (repeatable).")
@click.option("--path", "paths", multiple=True, metavar="REL", help="Query by an indexed path (repeatable).")
@click.option(
    "--queries", "queries_dir", type=click.Path(file_okay=False, exists=True), help="Folder of query images (a batch)."
)
@click.option("-k", "--k", "k", default=10, show_default=True, type=click.IntRange(1), help="Neighbours per query.")
@click.option(
    "--expand",
    default=DEFAULT_EXPAND,
    show_default=True,
    type=click.IntRange(0),
    metavar="K",
    help="Query expansion: search again with the query plus its K nearest neighbours, weighted by "
    "similarity^3. 0: raw nearest neighbours.",
)
@click.option(
    "--exclude-self",
    is_flag=True,
    help="Leave each query's own item out of its results (an --id/--path item, or an --image file that is indexed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines: {query, results: [...]} per query.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), help="Also write a page with thumbnails.")
@recorded_weights_option
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help=PRECISION_HELP + " For image queries.",
)
@click.option(
    "--images-root",
    default=None,
    metavar="DIR|URL",
    help="Folder (or object-store URL) of the indexed images for --html, when not where the index recorded it.",
)
def search(
    index_dir: str,
    images: tuple[str, ...],
    ids: tuple[int, ...],
    paths: tuple[str, ...],
    queries_dir: str | None,
    k: int,
    expand: int,
    exclude_self: bool,
    as_json: bool,
    html_file: str | None,
    weights: str | None,
    precision: str,
    images_root: str | None,
) -> None:
    """Nearest neighbours in INDEX_DIR of images, indexed ids or indexed paths (any mix, answered in that order:
    ids, paths, images, then the --queries folder)."""
    if not (images or ids or paths or queries_dir):
        raise click.UsageError("give at least one query: --image, --id, --path or --queries")
    from index.search import Searcher
    from index.search import images_root as find_images_root

    searcher = Searcher(index_dir, weights, precision)
    root = find_images_root(searcher, images_root) if html_file else None  # before searching: fail early
    found = searcher.search(images, ids, paths, queries_dir, k, exclude_self, expand)
    for path, kind, message in found.errors:
        warn(f"{text_cell(path)}: {kind}: {text_cell(message)}")
    results = found.results
    if not results:
        raise AlexfeatError(f"none of the {len(found.errors)} query images could be read")
    if as_json:
        for result in results:
            click.echo(json.dumps(result.as_dict()))
    else:
        _print_table(results, sys.stdout)
    if html_file and root is not None:
        from index.html import write_page

        thumbs = write_page(results, root, html_file, title=f"alexfeat search: {index_dir}")
        click.echo(f"wrote {html_file}: queries {len(results)}, neighbours {k} each", err=as_json)
        _unavailable_note(thumbs, root)


# ----------------------------------------------------------------------------------------------------- dedup


@click.command()
@click.argument("emb_dir", type=_DIR)
@click.option(
    "--threshold",
    default=None,
    type=click.FloatRange(0, 1, min_open=True),
    help="Score at or above which two images are copies: the verified score (default 0.96), or with --no-verify "
    "the embedding cosine (default 0.95).",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check candidate pairs on the images (copies, not lookalikes); --no-verify groups by embeddings alone "
    "(no images needed, but different photos of one thing are grouped too).",
)
@click.option(
    "--images-root",
    default=None,
    metavar="DIR|URL",
    help="Folder (or object-store URL) of the embedded images, when not where the embeddings recorded it.",
)
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False),
    help="Write the groups here: .json (list of groups of {id, path, score}) or .csv (group, id, path, score); "
    "score: to the group's first member.",
)
@click.option("--html", "html_file", type=click.Path(dir_okay=False), help="Also write a page of the groups.")
@progress_option
def dedup(
    emb_dir: str,
    threshold: float | None,
    verify: bool,
    images_root: str | None,
    out: str | None,
    html_file: str | None,
    progress: bool | None,
) -> None:
    """Find groups of near-duplicate images (copies: crops, resizes, re-encodes, brightness changes) in the
    embeddings dataset EMB_DIR, largest first."""
    from index.dedup import dedup_dataset, group_lines

    report = dedup_dataset(emb_dir, threshold, progress, out, verify=verify, images_root=images_root)
    for path, why in sorted(report.unreadable.items()):
        warn(f"cannot verify {text_cell(path)}: {text_cell(why)}")
    if out is None:
        for line in group_lines(report):
            click.echo(line)
    if html_file:
        from extractor.store import read_meta
        from index.html import write_groups_page
        from index.verify import images_root as find_images_root

        root = find_images_root(read_meta(emb_dir).root, images_root)
        thumbs = write_groups_page(report.groups, root, html_file, title=f"alexfeat dedup: {emb_dir}")
        click.echo(f"wrote {html_file}: {len(report.groups)} groups")
        _unavailable_note(thumbs, root)
    click.echo(report.summary(out))


def _unavailable_note(thumbs: Any, root: str) -> None:
    """Say (on stderr) how many images of a page could not be read now, and why the first could not."""
    if thumbs.missing:
        click.echo(
            f"{thumbs.missing} of {len(thumbs.uris)} images could not be read from {root} (shown as placeholders; "
            f"first: {text_cell(thumbs.first_error)}); --images-root names another copy",
            err=True,
        )


# ----------------------------------------------------------------------------------------------------- serve


@click.command()
@click.argument("index_dir", type=_DIR)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--images-root",
    default=None,
    metavar="DIR|URL",
    help="Folder (or object-store URL) of the indexed images (thumbnails), when not where the index recorded it.",
)
@recorded_weights_option
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
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help=PRECISION_HELP + " For image queries.",
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
    precision: str,
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
            f"{model['arch']} {model['layer']}/{model['pooling']} ({model['weights_source']}), {service.precision}\n"
            f"search page {url}  API docs {url}docs  (Ctrl+C stops)"
        )

    config = ServeConfig(index_dir, images_root, weights, max_upload_mb, max_pixels, max_batch, precision=precision)
    batches = run_server(config, host, port, access_log, on_ready=ready)
    queries = sum(size * count for size, count in batches.items())
    click.echo(f"stopped; served {queries:,} image queries in {sum(batches.values()):,} forward passes")
