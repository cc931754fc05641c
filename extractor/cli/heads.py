"""``alexfeat train``, ``predict``, ``export`` and ``finetune``: classifier heads on cached embeddings, then on
raw images. TensorFlow is imported inside the commands only (the modules imported here do not load it)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import click

from extractor import __version__
from extractor.heads.classifier_dir import ClassifierDir, read_classifier_dir, write_classifier_dir
from extractor.heads.export import EXPORT_FORMATS, export_classifier
from extractor.heads.labels import resolve_labels
from extractor.heads.predict import ImageClassifier, PredictError, Prediction, predict_vectors
from extractor.heads.train import HEAD_KINDS, TrainConfig, train_head
from extractor.images.decode import DEFAULT_MAX_PIXELS
from extractor.images.discover import discover
from extractor.network.tf_runtime import import_tensorflow
from extractor.parallel.stream import usable_cpus
from extractor.store import load_dataset, read_meta

progress_option = click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
weights_option = click.option(
    "--weights",
    default=None,
    metavar="SOURCE",
    help="Weights file to use instead of the one recorded with the embeddings (its sha256 must match).",
)


@click.command()
@click.argument("emb_dir", type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Head directory to write (head.keras, classes.json, metrics.json).",
)
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
    help="mlp: Dense(1024, relu) → Dropout → softmax; linear: softmax regression.",
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
    config = TrainConfig(kind, val_fraction, epochs, seed)  # checks the arguments before TensorFlow loads
    import_tensorflow()

    dataset = load_dataset(emb_dir, columns=("id", "path", "label"))
    labels = resolve_labels(labels_spec, dataset.get_paths(), dataset.labels)
    if labels.unlabelled:
        click.echo(
            f"warning: {labels.unlabelled} of {len(dataset)} rows have no label in {labels.source!r} and are left out",
            err=True,
        )
    result = train_head(dataset.get_vectors(), dataset.get_paths(), labels.values, config, progress)
    metrics = {
        **result.metrics,
        "embeddings": str(Path(emb_dir).resolve()),
        "labels": labels.source,
        "package_version": __version__,
    }
    write_classifier_dir(out_dir, result.model, False, result.classes, metrics, dataset.meta)
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
@weights_option
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
    classifier = read_classifier_dir(head_dir)
    paths = list(images) + ([os.path.join(image_dir, entry.path) for entry in discover(image_dir)] if image_dir else [])
    if weights and classifier.finetuned:
        click.echo("warning: --weights is ignored: a fine-tuned model holds its own weights", err=True)
    import_tensorflow()
    results: Iterable[Prediction | PredictError]
    if emb_dir is not None:
        results = _predict_embeddings(classifier, emb_dir, top)
    else:
        model = ImageClassifier(classifier.end_to_end(weights), classifier.classes, classifier.resize_spec, max_pixels)
        results = model.predict_files(paths, top, batch_size, workers, progress)
    done = failed = 0
    for result in results:
        is_error = isinstance(result, PredictError)
        done, failed = done + (not is_error), failed + is_error
        if as_json:
            click.echo(json.dumps(result.as_json(), ensure_ascii=False))
        elif isinstance(result, PredictError):
            click.echo(f"{result.path}: {result.error}: {result.message}", err=True)
        else:
            rest = "".join(f"\t{label} {p:.4f}" for label, p in result.top[1:])
            click.echo(f"{result.path}\t{result.label}\t{result.probability:.4f}{rest}")
    click.echo(f"classified {done}" + (f", {failed} could not be read" if failed else ""), err=True)


def _predict_embeddings(classifier: ClassifierDir, emb_dir: str, top: int) -> list[Prediction]:
    """Classify the rows of an embeddings dataset made with the head's model settings."""
    classifier.check_embeddings(read_meta(emb_dir), emb_dir)
    dataset = load_dataset(emb_dir, columns=("id", "path"), expect=classifier.meta)
    return predict_vectors(classifier.load_model(), classifier.classes, dataset.get_vectors(), dataset.get_paths(), top)


@click.command()
@click.argument("head_dir", type=click.Path(file_okay=False))
@click.option(
    "-o", "--output", "out", required=True, type=click.Path(), help="MODEL.keras (keras) or a directory (savedmodel)."
)
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="keras", show_default=True)
@weights_option
def export(head_dir: str, out: str, fmt: str, weights: str | None) -> None:
    """Export HEAD_DIR as one model: uint8 RGB images at the input size in, class probabilities out.

    The model holds preprocessing, the base network, pooling, L2 normalisation and the head; decoding and
    resizing stay outside (alexfeat's decoder, with the resize policy written to the class file).
    """
    classifier = read_classifier_dir(head_dir)
    import_tensorflow()
    result = export_classifier(classifier, out, fmt, weights)
    size = result.input_size
    click.echo(
        f"{result.path}: {fmt} model, uint8 RGB images (N, {size}, {size}, 3) decoded with "
        f"{classifier.meta.resize} -> {len(classifier.classes)} class probabilities; classes in "
        f"{result.classes_path}"
    )


@click.command()
@click.argument("images_dir", type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write (model.keras, classes.json, metrics.json).",
)
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
@weights_option
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
    source = read_classifier_dir(head_dir)
    next(iter(discover(images_dir)), None)  # a missing folder fails before TensorFlow loads
    import_tensorflow()
    from extractor.heads.finetune import FinetuneConfig
    from extractor.heads.finetune import finetune as run_finetune

    config = FinetuneConfig(
        unfreeze=unfreeze,
        learning_rate=learning_rate,
        epochs=epochs,
        batch_size=batch_size,
        val_fraction=val_fraction,
        seed=seed,
        workers=workers,
    )
    result = run_finetune(images_dir, source, config, weights, progress)
    metrics = {**result.metrics, "images": str(Path(images_dir).resolve()), "package_version": __version__}
    write_classifier_dir(out_dir, result.model, True, result.classes, metrics, source.meta)
    m = result.metrics
    if m["decode_errors"]:
        click.echo(
            f"warning: {m['decode_errors']} files could not be decoded and were left out (see "
            "decode_error_examples in metrics.json)",
            err=True,
        )
    trained = " + ".join([*m["unfrozen_layers"], "head"])
    click.echo(f"{out_dir}: fine-tuned {trained} on {m['train_count']} images, {m['val_count']} for validation")
    click.echo(
        f"val accuracy {m['val_accuracy_before']:.3f} -> {m['val_accuracy']:.3f} (best epoch "
        f"{m['best_epoch']} of {m['epochs_run']}) in {m['train_seconds']:.1f}s"
    )
