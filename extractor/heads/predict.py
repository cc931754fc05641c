"""Predict classes: image files through an end-to-end model, or cached embeddings through a head.

Each input gives a :class:`Prediction` or, for a file that cannot be decoded, a :class:`PredictError`; a bad file
never stops the others.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from extractor.images.batches import apply_model, failures_of, image_batches
from extractor.images.decode import DEFAULT_MAX_PIXELS, ResizeSpec
from extractor.util.progress import Progress


@dataclass(frozen=True)
class Prediction:
    """The most probable class of one input and the ``top`` classes, most probable first."""

    path: str
    label: str
    probability: float
    top: list[tuple[str, float]]

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "top": [{"label": label, "probability": p} for label, p in self.top],
        }


@dataclass(frozen=True)
class PredictError:
    """An input that could not be classified: ``error`` is the decoder's error kind."""

    path: str
    error: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error, "message": self.message}


def rank(probabilities: np.ndarray, classes: Sequence[str], paths: Sequence[str], top: int) -> list[Prediction]:
    """Predictions from a (N, classes) probability matrix (ties go to the earlier class)."""
    k = max(1, min(top, len(classes)))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    out = []
    for path, row, best in zip(paths, probabilities, order):
        ranked = [(classes[j], float(row[j])) for j in best.tolist()]
        out.append(Prediction(path, ranked[0][0], ranked[0][1], ranked))
    return out


class ImageClassifier:
    """An end-to-end Keras model (uint8 images → probabilities) with its classes and resize policy."""

    def __init__(
        self, model: Any, classes: Sequence[str], resize: ResizeSpec, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> None:
        import tensorflow as tf

        self.model, self.classes, self.resize, self.max_pixels = model, list(classes), resize, max_pixels
        size = resize.output_size
        if tuple(model.input_shape[1:]) != (size, size, 3):
            raise ValueError(f"model input {model.input_shape} does not match the resize policy {resize}")
        if model.output_shape[-1] != len(self.classes):
            raise ValueError(f"model gives {model.output_shape[-1]} outputs for {len(self.classes)} classes")
        self._call = tf.function(
            lambda images: model(images, training=False),
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)],
        )

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, classes) float32 probabilities of decoded uint8 images at the input size."""
        return self._call(np.asarray(images, dtype=np.uint8)).numpy()

    def predict_files(
        self, paths: Sequence[str], top: int = 3, batch_size: int = 32, workers: int = 2, progress: bool | None = None
    ) -> Iterator[Prediction | PredictError]:
        """Decode ``paths`` (in parallel threads) and classify them in batches, yielding results in input order."""
        batches = image_batches(paths, self.resize, self.max_pixels, batch_size, max(1, workers))
        with Progress(len(paths), "predict", progress) as bar:
            for columns in batches:
                out = apply_model(columns, self.probabilities, len(self.classes), "probabilities")
                ok = out["ok"]
                ranked = iter(rank(out["probabilities"][ok], self.classes, list(out["path"][ok]), top))
                errors = {i: PredictError(path, kind, message) for i, path, kind, message in failures_of(out)}
                for i in range(len(ok)):
                    yield next(ranked) if ok[i] else errors[i]
                bar.update(len(ok))


def predict_vectors(
    head: Any, classes: Sequence[str], vectors: np.ndarray, paths: Sequence[str], top: int = 3, batch_size: int = 4096
) -> list[Prediction]:
    """Classify cached L2-normalised embeddings with a head model (embeddings → probabilities)."""
    chunks = [head(vectors[i : i + batch_size], training=False).numpy() for i in range(0, len(vectors), batch_size)]
    probabilities = np.concatenate(chunks) if chunks else np.zeros((0, len(classes)), np.float32)
    return rank(probabilities, classes, paths, top)
