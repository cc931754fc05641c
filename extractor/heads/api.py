"""The heads' Python API: one call per command, directories in and out, as ``alexfeat train``, ``predict``,
``export`` and ``finetune`` run them (the CLI parses arguments, calls these and prints).

TensorFlow is imported inside the calls, after the arguments and input directories have been checked, so a bad
call fails in milliseconds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extractor import __version__
from extractor.heads.classifier_dir import ClassifierDir, check_output_dir, read_classifier_dir, write_classifier_dir
from extractor.heads.export import ExportResult, export_classifier
from extractor.heads.labels import resolve_labels
from extractor.heads.predict import ImageClassifier, PredictError, Prediction, predict_vectors
from extractor.heads.train import TrainConfig, train_head
from extractor.images.decode import DEFAULT_MAX_PIXELS
from extractor.images.discover import discover
from extractor.network.tf_runtime import import_tensorflow
from extractor.parallel.stream import usable_cpus
from extractor.store import load_dataset, read_meta

log = logging.getLogger(__name__)
Warn = Callable[[str], None]
"""Receives warnings a user should see before long work starts (default: ``logging.warning``); the CLI prints them
as ``warning: ...``."""

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ClassifierResult:
    """A classifier directory written by :func:`train_head_dir` or :func:`finetune_dir`.

    ``metrics`` is what ``metrics.json`` holds (accuracies, counts, settings, per-class report, timings).
    """

    path: Path
    classes: list[str]
    metrics: dict[str, Any] = field(repr=False)
    finetuned: bool = False

    @property
    def val_accuracy(self) -> float | None:
        return self.metrics.get("val_accuracy")


def train_head_dir(
    emb_dir: PathLike,
    out_dir: PathLike,
    labels: str = "label",
    progress: bool | None = None,
    warn: Warn | None = None,
    **config: Any,
) -> ClassifierResult:
    """Train a classifier head on the embeddings dataset ``emb_dir`` and write it to ``out_dir``.

    ``labels``: the dataset's label column, or a CSV file of ``path,label`` rows. ``config``: the fields of
    :class:`~extractor.heads.train.TrainConfig` (``kind="mlp"|"linear"``, ``val_fraction``, ``epochs``, ``seed``,
    ...). Rows without a label are left out, with a warning.
    """
    settings = TrainConfig(**config)  # checks the arguments before TensorFlow loads
    check_output_dir(out_dir)
    import_tensorflow()
    dataset = load_dataset(emb_dir, columns=("id", "path", "label"))
    resolved = resolve_labels(labels, dataset.get_paths(), dataset.labels)
    if resolved.unlabelled:
        (warn or log.warning)(
            f"{resolved.unlabelled} of {len(dataset)} rows have no label in {resolved.source!r} and are left out"
        )
    trained = train_head(dataset.get_vectors(), dataset.get_paths(), resolved.values, settings, progress)
    metrics = {
        **trained.metrics,
        "embeddings": str(Path(emb_dir).resolve()),
        "labels": resolved.source,
        "package_version": __version__,
    }
    path = write_classifier_dir(out_dir, trained.model, False, trained.classes, metrics, dataset.meta)
    return ClassifierResult(path, trained.classes, metrics)


def image_files(files: Iterable[PathLike] = (), folder: PathLike | None = None) -> list[str]:
    """``files``, then every image under ``folder`` (recursively, in discovery order)."""
    found = [os.path.join(folder, entry.path) for entry in discover(folder)] if folder is not None else []
    return [str(f) for f in files] + found


def load_image_classifier(
    head_dir: PathLike, weights: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, warn: Warn | None = None
) -> ImageClassifier:
    """The end-to-end classifier (decoded images → probabilities) of a head or fine-tuned directory, built once
    and reusable: call :meth:`ImageClassifier.predict_files` as often as needed. ``weights`` overrides a head's
    recorded weights source (ignored, with a warning, for a fine-tuned directory)."""
    return _image_classifier(read_classifier_dir(head_dir), weights, max_pixels, warn)


def _image_classifier(
    classifier: ClassifierDir, weights: str | None, max_pixels: int, warn: Warn | None
) -> ImageClassifier:
    if weights and classifier.finetuned:
        (warn or log.warning)("--weights is ignored: a fine-tuned model holds its own weights")
    import_tensorflow()
    return ImageClassifier(classifier.end_to_end(weights), classifier.classes, classifier.resize_spec, max_pixels)


def predict_files(
    head_dir: PathLike,
    files: Iterable[PathLike] = (),
    folder: PathLike | None = None,
    top: int = 3,
    weights: str | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool | None = None,
    warn: Warn | None = None,
) -> Iterator[Prediction | PredictError]:
    """Classify image ``files`` (and every image under ``folder``) with the model in ``head_dir``, decoded and
    embedded as its embeddings were. Yields, in input order, a :class:`Prediction` per file or a
    :class:`PredictError` for a file that cannot be read. The model is built before this returns."""
    classifier = read_classifier_dir(head_dir)  # a bad directory fails before the folder is listed
    paths = image_files(files, folder)
    model = _image_classifier(classifier, weights, max_pixels, warn)
    return model.predict_files(paths, top, batch_size, workers or usable_cpus(), progress)


def predict_dataset(head_dir: PathLike, emb_dir: PathLike, top: int = 3) -> list[Prediction]:
    """Classify the rows of an embeddings dataset made with the head's model settings (no network run)."""
    classifier = read_classifier_dir(head_dir)
    classifier.check_embeddings(read_meta(emb_dir), str(emb_dir))
    import_tensorflow()
    dataset = load_dataset(emb_dir, columns=("id", "path"), expect=classifier.meta)
    return predict_vectors(classifier.load_model(), classifier.classes, dataset.get_vectors(), dataset.get_paths(), top)


def export_model(head_dir: PathLike, out: PathLike, fmt: str = "keras", weights: str | None = None) -> ExportResult:
    """Export ``head_dir`` as one model (uint8 RGB images at the input size → class probabilities): a ``.keras``
    file (``fmt="keras"``) or a SavedModel directory (``fmt="savedmodel"``), with its class file."""
    classifier = read_classifier_dir(head_dir)
    import_tensorflow()
    return export_classifier(classifier, out, fmt, weights)


def finetune_dir(
    images_dir: PathLike,
    out_dir: PathLike,
    head_dir: PathLike,
    weights: str | None = None,
    progress: bool | None = None,
    **config: Any,
) -> ClassifierResult:
    """Fine-tune the last conv layers and the head of ``head_dir`` on the class folders of ``images_dir`` and write
    the result to ``out_dir`` (usable like a head directory). ``config``: the fields of
    :class:`~extractor.heads.finetune.FinetuneConfig` (``unfreeze``, ``learning_rate``, ``epochs``, ...)."""
    source = read_classifier_dir(head_dir)
    check_output_dir(out_dir)
    next(iter(discover(images_dir)), None)  # a missing folder fails before TensorFlow loads
    import_tensorflow()
    from extractor.heads.finetune import FinetuneConfig, finetune

    result = finetune(str(images_dir), source, FinetuneConfig(**config), weights, progress)
    metrics = {**result.metrics, "images": str(Path(images_dir).resolve()), "package_version": __version__}
    path = write_classifier_dir(out_dir, result.model, True, result.classes, metrics, source.meta)
    return ClassifierResult(path, result.classes, metrics, finetuned=True)


__all__: Sequence[str] = (
    "ClassifierResult",
    "export_model",
    "finetune_dir",
    "image_files",
    "load_image_classifier",
    "predict_dataset",
    "predict_files",
    "train_head_dir",
)
