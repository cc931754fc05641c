"""``alexfeat embed``: images (a folder, a manifest, an object store, tar shards) → L2-normalised AlexNet embeddings
in a Parquet dataset."""

from __future__ import annotations

import os
from typing import Any

import click

from extractor.embed.decode_stream import MAX_DECODE_SECONDS
from extractor.images.decode import DEFAULT_MAX_PIXELS
from extractor.network.archs import ARCHS, DEFAULT_RESIZE, LAYERS, TTAS
from extractor.network.poolings import DEFAULT_POOLING, POOLINGS
from extractor.network.precision import PRECISION_HELP, PRECISIONS
from extractor.parallel.stream import usable_cpus
from extractor.util.cli_options import output_dir_option, progress_option


@click.command()
@click.argument("sources", nargs=-1, metavar="[SOURCE]")  # one; more is the shell expanding a pattern: said so
@output_dir_option("Dataset directory (created; rerunning resumes it).")
@click.option(
    "--weights",
    default=None,
    metavar="SOURCE",
    help="imagenet | PATH (.pth, .npz, .weights.h5) | random. Default: on a rerun the dataset's own, else "
    "$ALEXFEAT_WEIGHTS or imagenet.",
)
@click.option(
    "--arch",
    type=click.Choice(ARCHS),
    default=None,
    help="Architecture; taken from the weights when omitted (random alone: torchvision).",
)
@click.option(
    "--layer",
    type=click.Choice(LAYERS),
    default=None,
    help=f"Default: {LAYERS[0]} (on a rerun: the dataset's own).",
)
@click.option(
    "--pooling",
    type=click.Choice(list(POOLINGS)),
    default=None,
    help="Global pooling of pool5 (ignored with fc6/fc7; default "
    + DEFAULT_POOLING
    + ", on a rerun the dataset's own): "
    + ", ".join(f"{name} ({pooling.about})" for name, pooling in POOLINGS.items())
    + ".",
)
@click.option(
    "--resize",
    default=None,
    metavar="POLICY",
    help="e.g. squash256-center227, shorter256-center224, squash227. Default: the weights' training policy ("
    + ", ".join(f"{arch}: {policy}" for arch, policy in DEFAULT_RESIZE.items())
    + ").",
)
@click.option(
    "--tta",
    type=click.Choice(TTAS),
    default=None,
    help="Test-time augmentation: flip embeds each image as the mean of it and its mirror (twice the inference). "
    f"Default: {TTAS[0]} (on a rerun: the dataset's own).",
)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--workers",
    default=usable_cpus(),
    show_default=True,
    type=click.IntRange(0, 256),
    help="Decoding processes (0: decode in the main thread).",
)
@click.option("--rows-per-part", default=None, type=click.IntRange(1), help="Rows per Parquet part file.")
@click.option(
    "--max-pixels",
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    type=click.IntRange(1),
    help="Larger images are recorded as errors (checked from the header).",
)
@click.option(
    "--max-decode-seconds",
    default=MAX_DECODE_SECONDS,
    show_default=True,
    type=click.FloatRange(0),
    help="CPU seconds one file may take to decode in a decode process; slower files are stopped and "
    "recorded as timeout errors (0: no limit).",
)
@click.option("--prune", is_flag=True, help="Drop rows of files that no longer exist.")
@click.option(
    "--retry-errors",
    is_flag=True,
    help="Try again files that failed before (see `alexfeat errors`) even when unchanged (e.g. after raising "
    "--max-pixels); by default only changed ones are retried.",
)
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True, help=PRECISION_HELP)
@click.option("--overwrite", is_flag=True, help="Discard the existing dataset in OUT_DIR and start afresh.")
@click.option(
    "--follow-outside/--no-follow-outside",
    default=True,
    show_default=True,
    help="Follow symbolic links whose target lies outside a SOURCE folder (links inside it are always followed; "
    "loops never are).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: decode processes and TensorFlow on this machine; ray: Ray Data tasks and actors on a Ray "
    "cluster (pip install 'alexfeat[ray]'; see docs/scale.md).",
)
@click.option(
    "--address",
    default=None,
    metavar="auto|ray://HOST:10001",
    help="With --engine ray: the cluster to join (auto: the one this machine belongs to). Default: a local Ray "
    "instance started for the job.",
)
@click.option(
    "--num-actors",
    default=None,
    type=click.IntRange(1),
    help="With --engine ray: inference actors (default: 3/4 of the cluster's CPUs / --cpus-per-actor).",
)
@click.option(
    "--cpus-per-actor",
    default=1.5,
    show_default=True,
    type=click.FloatRange(0.1),
    help="With --engine ray: CPUs reserved by each inference actor (its TensorFlow threads: rounded up).",
)
@click.option(
    "--from-list",
    "from_list",
    default=None,
    metavar="FILE",
    help="Embed the images FILE lists instead: a text file (one path or URL a line), or a CSV or Parquet file "
    "with a 'path' column and an optional 'label' column.",
)
@click.option(
    "--root",
    "list_root",
    default=None,
    metavar="DIR|URL",
    help="With --from-list: where relative paths resolve (default: the list's folder); the stored paths are "
    "relative to it.",
)
@progress_option
def embed(
    sources: tuple[str, ...],
    out_dir: str,
    weights: str | None,
    arch: str | None,
    layer: str | None,
    pooling: str | None,
    resize: str | None,
    tta: str | None,
    batch_size: int,
    workers: int,
    rows_per_part: int | None,
    max_pixels: int,
    max_decode_seconds: float,
    prune: bool,
    retry_errors: bool,
    precision: str,
    overwrite: bool,
    follow_outside: bool,
    engine: str,
    address: str | None,
    num_actors: int | None,
    cpus_per_actor: float,
    from_list: str | None,
    list_root: str | None,
    progress: bool | None,
) -> None:
    """Embed every image of SOURCE into the Parquet dataset OUT_DIR.

    SOURCE is a folder, an object-store prefix (s3://bucket/prefix, gs://..., az://...; credentials and
    endpoint from the environment, e.g. AWS_PROFILE, AWS_ENDPOINT_URL), or tar shards ('shards/{00000..00099}.tar',
    'shards/*.tar', or a folder of .tar files); or give --from-list FILE instead.

    Reruns embed only new and changed files, with the model the dataset recorded (no options needed). Files that
    cannot be embedded are recorded (list them with `alexfeat errors OUT_DIR`) and never stop the job.
    """
    from extractor.embed.job import embed_folder
    from extractor.images.sources import open_source

    ray_only = {"--address": address, "--num-actors": num_actors, "--cpus-per-actor": cpus_per_actor != 1.5}
    given = [name for name, value in ray_only.items() if value]
    if engine != "ray" and given:
        raise click.UsageError(f"{', '.join(given)} only apply with --engine ray")
    if len(sources) > 1:
        shown = " ".join(sources[:3]) + (" ..." if len(sources) > 3 else "")
        raise click.UsageError(
            f"give one SOURCE, not {len(sources)} ({shown}); quote a shard pattern, 'shards/*.tar' or "
            "'shards/{00000..00099}.tar', so that the shell passes it as it is"
        )
    source = sources[0] if sources else None
    if (source is None) == (from_list is None):
        raise click.UsageError("give SOURCE (a folder, URL or tar shards) or --from-list FILE, one of them")
    if list_root is not None and from_list is None:
        raise click.UsageError("--root only applies with --from-list")
    # a missing folder, manifest or shard pattern fails before the model loads
    images = open_source(source, from_list, list_root, follow_outside)
    from extractor.embed.local import LocalEngine

    runner: Any = LocalEngine()
    if engine == "ray":
        from extractor.embed.ray_engine import RayEngine
        from extractor.parallel.ray_cluster import import_ray

        import_ray()  # not installed: say how, before the model loads
        runner = RayEngine(address, num_actors, cpus_per_actor)
    summary = embed_folder(
        images,
        out_dir,
        weights,
        arch,
        layer,
        pooling,
        resize,
        tta,
        precision,
        batch_size=batch_size,
        workers=workers,
        rows_per_part=rows_per_part,
        max_pixels=max_pixels,
        max_decode_seconds=max_decode_seconds or None,
        prune=prune,
        retry_errors=retry_errors,
        overwrite=overwrite,
        follow_outside=follow_outside,
        progress=progress,
        engine=runner,
    )
    meta = summary.meta
    assert meta is not None
    if summary.changed:
        augmented = "" if meta.tta == "none" else f", test-time augmentation {meta.tta}"
        click.echo(f"{out_dir}: {meta.arch} {meta.layer}/{meta.pooling} {meta.dim}-d embeddings{augmented}")
    for line in summary.lines(out_dir):
        click.echo(line)


@click.command()
@click.argument("emb_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {path, error, message, size, mtime_ns}.")
def errors(emb_dir: str, as_json: bool) -> None:
    """List the files of the dataset EMB_DIR that could not be embedded, with the reason."""
    import json

    from extractor.store import list_parts, read_errors
    from extractor.util.textsafe import text_cell

    records = read_errors(emb_dir).to_pylist()
    if not records and not list_parts(emb_dir) and any(not n.startswith(".") for n in os.listdir(emb_dir)):
        raise click.ClickException(f"{emb_dir} is not an embeddings dataset: give the -o directory of `alexfeat embed`")
    if as_json:
        click.echo(json.dumps(records, indent=1, ensure_ascii=False))
        return
    for record in records:  # one line each: control characters in names escaped (JSON keeps them exact)
        click.echo(f"{text_cell(record['path'])}\t{record['error']}\t{text_cell(record['message'])}")
    click.echo(f"{len(records)} file(s) could not be embedded" if records else "no errors recorded", err=True)
