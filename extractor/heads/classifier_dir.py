"""Classifier directories: what ``train`` and ``finetune`` write, and what ``predict`` and ``export`` read.

A head directory (``alexfeat train``)::

    head.keras      embedding (N, dim) float32, L2-normalised → (N, classes) probabilities
    classes.json    the class names, in the order of the probabilities (Python ``sorted()``)
    metrics.json    training metrics, settings, and ``embedding_metadata``: the dataset's model settings

A fine-tuned directory (``alexfeat finetune``) holds ``model.keras`` instead of ``head.keras``: the whole
network, uint8 RGB images (N, S, S, 3) at the input size → probabilities.

Both give the same end-to-end model through :meth:`ClassifierDir.end_to_end`: for a head it is rebuilt from the
recorded metadata (Preprocess + base + pooling, then ``keras.layers.UnitNormalization``, then the head), so it
computes exactly what ``alexfeat embed`` stored followed by the head.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extractor.errors import AlexfeatError, DatasetError
from extractor.network.spec import EmbeddingMeta
from extractor.util.atomic import atomic_dir, check_replaceable

HEAD_FILE = "head.keras"
MODEL_FILE = "model.keras"
CLASSES_FILE = "classes.json"
METRICS_FILE = "metrics.json"
META_KEY = "embedding_metadata"
OUR_FILES = frozenset({HEAD_FILE, MODEL_FILE, CLASSES_FILE, METRICS_FILE})


class ClassifierDirError(AlexfeatError):
    """A head or fine-tuned directory is missing, incomplete or corrupt."""


@dataclass(frozen=True)
class ClassifierDir:
    """A head directory or a fine-tuned directory, read."""

    path: Path
    classes: list[str]
    metrics: dict[str, Any]
    meta: EmbeddingMeta
    finetuned: bool

    @property
    def model_path(self) -> Path:
        return self.path / (MODEL_FILE if self.finetuned else HEAD_FILE)

    @property
    def resize_spec(self) -> Any:
        """The decoder's resize policy the model expects (that of the embeddings it was trained on)."""
        from extractor.images.decode import ResizeSpec

        return ResizeSpec.parse(self.meta.resize)

    def load_model(self) -> Any:
        """The stored Keras model: the head (embeddings in) or the fine-tuned network (images in)."""
        import keras

        import extractor.network.model  # noqa: F401  (registers the custom layers)

        try:
            model = keras.models.load_model(self.model_path, compile=False)
        except Exception as exc:  # Keras raises many types for damaged archives
            raise ClassifierDirError(f"cannot load {self.model_path}: {exc}. Train it again") from exc
        self._check_shapes(model)
        return model

    def _check_shapes(self, model: Any) -> None:
        """Refuse a model whose outputs are not one per class, or a head whose input is not the embedding size."""
        try:
            inputs, outputs = tuple(model.input_shape), tuple(model.output_shape)
        except (AttributeError, ValueError, TypeError):
            raise ClassifierDirError(
                f"{self.model_path} is not a single-input, single-output model; train it again"
            ) from None
        if outputs[-1] != len(self.classes):
            raise ClassifierDirError(
                f"{self.model_path} gives {outputs[-1]} class probabilities but {self.path / CLASSES_FILE} names "
                f"{len(self.classes)} classes: the files are from different runs; train the head again"
            )
        if not self.finetuned and inputs[-1] != self.meta.dim:
            raise ClassifierDirError(
                f"{self.model_path} expects {inputs[-1]}-d embeddings but {self.path / METRICS_FILE} records "
                f"{self.meta.dim}-d ones (embedding_metadata): the files are from different runs; train the head again"
            )

    def check_embeddings(self, meta: EmbeddingMeta, where: str) -> None:
        """Refuse embeddings made with other model settings than this classifier's (or any, when fine-tuned)."""
        if self.finetuned:
            raise AlexfeatError(
                f"{self.path} is a fine-tuned network: its base changed, so cached embeddings no "
                "longer fit it; give it images instead"
            )
        self.meta.check_compatible(
            meta,
            f"{where} was made with another model than the head in {self.path} (head != embeddings)",
            hint="Embed the images with the head's settings (see embedding_metadata in its metrics.json), or "
            "train a head on these embeddings",
        )

    def end_to_end(self, weights: str | None = None) -> Any:
        """uint8 RGB images (N, S, S, 3) → probabilities. For a head, ``weights`` overrides the recorded weights
        source (a file with another sha256 is refused)."""
        if self.finetuned:
            return self.load_model()
        from extractor.network.features import FeatureExtractor

        extractor = FeatureExtractor.from_metadata(self.meta, weights)
        return end_to_end_model(extractor.model, self.load_model())


def end_to_end_model(features: Any, head: Any, name: str = "alexfeat_classifier") -> Any:
    """One Keras model: ``features`` (uint8 images → unnormalised embeddings) → L2 normalisation → ``head``."""
    import keras

    size = features.input_shape[1]
    inputs = keras.Input(shape=(size, size, 3), dtype="uint8", name="image")
    embedding = keras.layers.UnitNormalization(name="l2_normalize")(features(inputs))
    return keras.Model(inputs, head(embedding), name=name)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClassifierDirError(
            f"{path} is missing: {path.parent} is not a complete head directory (made by "
            "`alexfeat train` or `alexfeat finetune`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ClassifierDirError(f"cannot read {path}: {exc}") from exc


def read_classifier_dir(path: str | os.PathLike[str]) -> ClassifierDir:
    """Read a head or fine-tuned directory's classes and metrics (the model loads on demand)."""
    path = Path(path)
    if not path.is_dir():
        raise ClassifierDirError(
            f"{path} is not a directory: give a directory made by `alexfeat train -o DIR` or `alexfeat finetune -o DIR`"
        )
    finetuned = (path / MODEL_FILE).is_file()
    if not finetuned and not (path / HEAD_FILE).is_file():
        raise ClassifierDirError(
            f"{path} holds neither {HEAD_FILE} nor {MODEL_FILE}: it was not made by "
            "`alexfeat train` or `alexfeat finetune`"
        )
    classes = _read_json(path / CLASSES_FILE)
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or len(classes) < 2:
        raise ClassifierDirError(f"{path / CLASSES_FILE} must be a list of at least two class names")
    metrics = _read_json(path / METRICS_FILE)
    if not isinstance(metrics, dict) or not isinstance(metrics.get(META_KEY), dict):
        raise ClassifierDirError(f"{path / METRICS_FILE} lacks {META_KEY}: train the head again")
    try:
        meta = EmbeddingMeta.from_dict(metrics[META_KEY], where=str(path / METRICS_FILE))
    except DatasetError as exc:
        raise ClassifierDirError(str(exc)) from exc
    return ClassifierDir(path, classes, metrics, meta, finetuned)


def check_output_dir(out_dir: str | os.PathLike[str]) -> Path:
    """The output directory of ``train`` / ``finetune``, refused early when it cannot be replaced as a whole: the
    current directory or one above it, a file, or a directory holding files that are not a classifier's."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ClassifierDirError(f"output {out_dir} exists and is not a directory")
        foreign = sorted(name for name in os.listdir(out_dir) if name not in OUR_FILES)
        if foreign:
            raise ClassifierDirError(
                f"{out_dir} holds files that are not a classifier's ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty directory"
            )
    return out_dir


def write_classifier_dir(
    out_dir: str | os.PathLike[str],
    model: Any,
    finetuned: bool,
    classes: list[str],
    metrics: Mapping[str, Any],
    meta: EmbeddingMeta,
) -> Path:
    """Write a classifier directory as a whole: staged in ``.NAME.tmp`` beside it, then swapped into place.

    An existing ``out_dir`` is replaced only when it is empty or a classifier directory itself.
    """
    out_dir = check_output_dir(out_dir)
    try:
        with atomic_dir(out_dir) as staging:
            model.save(staging / (MODEL_FILE if finetuned else HEAD_FILE))
            (staging / CLASSES_FILE).write_text(
                json.dumps(classes, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
            )
            record = {**metrics, META_KEY: meta.to_dict()}
            (staging / METRICS_FILE).write_text(
                json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
            )
    except OSError as exc:
        raise ClassifierDirError(f"cannot write {out_dir} ({exc}); choose a writable output directory") from exc
    return out_dir
