"""``alexfeat train``, ``predict``, ``export`` and ``finetune``: classifier heads on cached embeddings, then on
raw images. Each command parses its arguments, calls one function of :mod:`extractor.heads.api` and prints;
TensorFlow is imported inside those calls only (the modules imported here do not load it)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import click

from extractor.heads.api import export_model, finetune_dir, predict_dataset, predict_files, train_head_dir
from extractor.heads.export import EXPORT_FORMATS
from extractor.heads.predict import PredictError, Prediction
from extractor.heads.train import DROPOUT, HEAD_KINDS, HIDDEN_UNITS
from extractor.images.decode import DEFAULT_MAX_PIXELS
from extractor.network.precision import PRECISION_HELP, PRECISIONS
from extractor.parallel.stream import usable_cpus
from extractor.util.cli_options import output_dir_option, progress_option, recorded_weights_option, warn
from extractor.util.textsafe import text_cell


@click.command()
@click.argument("emb_dir", type=click.Path(file_okay=False))
@output_dir_option("Head directory to write (head.keras, classes.json, metrics.json).")
@click.option(
    "--labels",
    "labels_spec",
    default="label",
    show_default=True,
    metavar="COLUMN|FILE.csv",
    help="The dataset's label column (folder names), or a CSV file with path,label rows.",
)
@click.option(
    "--head",
    "kind",
    type=click.Choice(HEAD_KINDS),
    default="mlp",
    show_default=True,
    help=f"mlp: Dense({HIDDEN_UNITS}, relu) → Dropout({DROPOUT}) → softmax; linear: softmax regression.",
)
@click.option(
    "--val-fraction",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Share of each class held out for validation and early stopping (0: train on all).",
)
@click.option(
    "--epochs",
    default=None,
    type=click.IntRange(1),
    help="Most epochs (early stopping ends sooner); exactly this many with --val-fraction 0. "
    "Default: mlp 100, linear 200.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the split, initialisation and order.")
@progress_option
def train(
    emb_dir: str,
    out_dir: str,
    labels_spec: str,
    kind: str,
    val_fraction: float,
    epochs: int | None,
    seed: int,
    progress: bool | None,
) -> None:
    """Train a classifier head on the embeddings in EMB_DIR and write it to OUT_DIR.

    Rows without a label (files directly in the embedded folder, or paths a CSV leaves out) are skipped with a
    warning.
    """
    result = train_head_dir(
        emb_dir, out_dir, labels_spec, progress, warn, kind=kind, val_fraction=val_fraction, epochs=epochs, seed=seed
    )
    m = result.metrics
    val = f"val accuracy {m['val_accuracy']:.3f}" if m["val_accuracy"] is not None else "no validation split"
    click.echo(
        f"{out_dir}: {kind} head, {m['classes']} classes, {m['train_count']} train / {m['val_count']} val vectors"
    )
    click.echo(
        f"train accuracy {m['train_accuracy']:.3f}, {val}; {m['epochs_run']} epochs (best {m['best_epoch']}) "
        f"in {m['train_seconds']:.1f}s"
    )


@click.command()
@click.argument("head_dir", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--dir",
    "image_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Classify every image under this folder (recursively).",
)
@click.option(
    "--embeddings",
    "emb_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Classify the rows of an embeddings dataset instead (no network run; a head directory only).",
)
@click.option("--top", default=3, show_default=True, type=click.IntRange(1), help="Classes listed per image.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: path, label, probability, top.")
@recorded_weights_option
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help=PRECISION_HELP + " A fine-tuned model runs as saved.",
)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--workers", default=usable_cpus(), show_default=True, type=click.IntRange(1, 256), help="Decoding threads."
)
@click.option("--max-pixels", default=DEFAULT_MAX_PIXELS, show_default=True, type=click.IntRange(1))
@progress_option
def predict(
    head_dir: str,
    images: tuple[str, ...],
    image_dir: str | None,
    emb_dir: str | None,
    top: int,
    as_json: bool,
    weights: str | None,
    precision: str,
    batch_size: int,
    workers: int,
    max_pixels: int,
    progress: bool | None,
) -> None:
    """Classify IMAGES (and/or the images under --dir) with the head or fine-tuned model in HEAD_DIR.

    Images are decoded and embedded exactly as the head's embeddings were (the settings recorded with them).
    Files that cannot be read are reported one by one (JSON: {"path", "error", "message"}) and do not stop the
    others.
    """
    if emb_dir is not None and (images or image_dir):
        raise click.UsageError("give either images (IMAGES or --dir) or --embeddings, not both")
    if emb_dir is None and not images and image_dir is None:
        raise click.UsageError("give image files, --dir DIR or --embeddings EMB_DIR")
    results: Iterable[Prediction | PredictError]
    if emb_dir is not None:
        results = predict_dataset(head_dir, emb_dir, top)
    else:
        results = predict_files(
            head_dir, images, image_dir, top, weights, batch_size, workers, max_pixels, progress, warn, precision
        )
    done = failed = 0
    for result in results:
        if isinstance(result, PredictError):
            failed += 1
            line, to_stderr = f"{text_cell(result.path)}: {result.error}: {text_cell(result.message)}", True
        else:
            done += 1
            rest = "".join(f"\t{text_cell(label)} {p:.4f}" for label, p in result.top[1:])
            line = f"{text_cell(result.path)}\t{text_cell(result.label)}\t{result.probability:.4f}{rest}"
            to_stderr = False
        if as_json:
            click.echo(json.dumps(result.as_json(), ensure_ascii=False))
        else:
            click.echo(line, err=to_stderr)
    none = f": found no images under {image_dir}" if image_dir and not (done or failed or images) else ""
    click.echo(f"classified {done}" + (f", {failed} could not be read" if failed else "") + none, err=True)


@click.command()
@click.argument("head_dir", type=click.Path(file_okay=False))
@click.option(
    "-o", "--output", "out", required=True, type=click.Path(), help="MODEL.keras (keras) or a directory (savedmodel)."
)
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="keras", show_default=True)
@recorded_weights_option
def export(head_dir: str, out: str, fmt: str, weights: str | None) -> None:
    """Export HEAD_DIR as one model: uint8 RGB images at the input size in, class probabilities out.

    The model holds preprocessing, the base network, pooling, L2 normalisation and the head; decoding and
    resizing stay outside (alexfeat's decoder, with the resize policy written to the class file).
    """
    result = export_model(head_dir, out, fmt, weights)
    size = result.input_size
    click.echo(
        f"{result.path}: {fmt} model, uint8 RGB images (N, {size}, {size}, 3) decoded with "
        f"{result.resize} -> {len(result.classes)} class probabilities; classes in "
        f"{result.classes_path}"
    )


@click.command()
@click.argument("images_dir", type=click.Path(file_okay=False))
@output_dir_option("Directory to write (model.keras, classes.json, metrics.json).")
@click.option(
    "--from",
    "head_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Head directory (alexfeat train) or fine-tuned directory to start from.",
)
@click.option(
    "--unfreeze",
    default=3,
    show_default=True,
    type=click.IntRange(0, 5),
    help="Last conv layers of the base that train with the head (3: conv3-conv5).",
)
@click.option("--lr", "learning_rate", default=1e-5, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 1024))
@click.option(
    "--val-fraction",
    default=None,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Default: the head's (the same validation images as in training).",
)
@click.option("--seed", default=None, type=int, help="Default: the head's.")
@recorded_weights_option
@click.option(
    "--workers", default=usable_cpus(), show_default=True, type=click.IntRange(1, 256), help="Decoding threads."
)
@progress_option
def finetune(
    images_dir: str,
    out_dir: str,
    head_dir: str,
    unfreeze: int,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    val_fraction: float | None,
    seed: int | None,
    weights: str | None,
    workers: int,
    progress: bool | None,
) -> None:
    """Fine-tune the last conv layers and the head of HEAD_DIR end to end on the class folders of IMAGES_DIR.

    Reports validation accuracy before and after; OUT_DIR works with predict and export like a head directory.
    """
    result = finetune_dir(
        images_dir,
        out_dir,
        head_dir,
        weights,
        progress,
        unfreeze=unfreeze,
        learning_rate=learning_rate,
        epochs=epochs,
        batch_size=batch_size,
        val_fraction=val_fraction,
        seed=seed,
        workers=workers,
    )
    m = result.metrics
    if m["decode_errors"]:
        warn(
            f"{m['decode_errors']} files could not be decoded and were left out (see decode_error_examples in "
            "metrics.json)"
        )
    trained = " + ".join([*m["unfrozen_layers"], "head"])
    click.echo(f"{out_dir}: fine-tuned {trained} on {m['train_count']} images, {m['val_count']} for validation")
    click.echo(
        f"val accuracy {m['val_accuracy_before']:.3f} -> {m['val_accuracy']:.3f} (best epoch "
        f"{m['best_epoch']} of {m['epochs_run']}) in {m['train_seconds']:.1f}s"
    )
