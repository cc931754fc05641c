"""Classifier heads trained in seconds on cached, L2-normalised embeddings.

A head is a small Keras model from one embedding to class probabilities:

- ``mlp``: the classic transfer-learning recipe, Dense(1024, relu) → Dropout(0.5) → Dense(classes, softmax);
- ``linear``: softmax regression, Dense(classes, softmax).

Both start with a fixed standardisation of the embedding (a ``keras.layers.Normalization`` holding the training
split's per-dimension mean and variance; variances are floored at 1 % of their mean so that a dimension that
hardly varies is not blown up) and put an L2 penalty on their kernels, so that training converges to a stable
optimum, as a regularised logistic regression does.

Training is a compiled full-epoch loop (one ``tf.function`` call per epoch, Adam, shuffled minibatches) with
early stopping on the validation loss that restores the best epoch's weights; Keras's ``fit`` costs more per
epoch than the epoch itself at this size. The validation split is stratified and seeded by path: within each
class the paths ranked by ``sha256(seed, path)`` give the first ``round(n × fraction)`` to validation, so the
same images get the same split in ``train`` and ``finetune``, whatever else the dataset holds.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extractor.errors import AlexfeatError
from extractor.heads.metrics import classification_report
from extractor.util.progress import Progress

HEAD_KINDS = ("mlp", "linear")
SPLIT_METHOD = "per class, paths ranked by sha256(f'{seed}:{path}'); the first round(n * val_fraction) validate"


@dataclass(frozen=True)
class HeadDefaults:
    """Per-kind training defaults (found on the Caltech-101 development subset, see scripts/bench_heads.py)."""

    learning_rate: float
    l2: float
    epochs: int  # the most epochs with a validation split; exactly this many without one
    patience: int
    batch_size: int = 128


DEFAULTS = {
    "mlp": HeadDefaults(learning_rate=1e-3, l2=3e-3, epochs=100, patience=5),
    "linear": HeadDefaults(learning_rate=3e-3, l2=1e-2, epochs=200, patience=20),
}
HIDDEN_UNITS = 1024
DROPOUT = 0.5
VARIANCE_FLOOR = 0.01  # of the mean variance


@dataclass(frozen=True)
class TrainConfig:
    """How to train a head; ``None`` fields take the kind's :data:`DEFAULTS`."""

    kind: str = "mlp"
    val_fraction: float = 0.2
    epochs: int | None = None
    seed: int = 0
    learning_rate: float | None = None
    l2: float | None = None
    batch_size: int | None = None
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise AlexfeatError(f"unknown head {self.kind!r}: choose one of {', '.join(HEAD_KINDS)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise AlexfeatError(f"--val-fraction must be at least 0 and below 1, not {self.val_fraction}")
        if self.epochs is not None and self.epochs < 1:
            raise AlexfeatError(f"--epochs must be at least 1, not {self.epochs}")

    def resolved(self) -> dict[str, Any]:
        """Every setting, defaults filled in (recorded in metrics.json)."""
        base = DEFAULTS[self.kind]
        return {
            "head": self.kind,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "epochs": self.epochs or base.epochs,
            "learning_rate": self.learning_rate or base.learning_rate,
            "l2": base.l2 if self.l2 is None else self.l2,
            "batch_size": self.batch_size or base.batch_size,
            "patience": self.patience or base.patience,
        }


@dataclass
class TrainedHead:
    """A trained head, its classes (sorted) and the metrics that go to metrics.json."""

    model: Any  # keras.Model: (N, dim) float32 embeddings → (N, classes) probabilities
    classes: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)


def encode_labels(labels: Sequence[str | None]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(classes in ``sorted()`` order, class index of each labelled row, indices of the labelled rows).

    Fewer than two classes is an error: a classifier needs something to tell apart.
    """
    rows = np.array([i for i, label in enumerate(labels) if label is not None], dtype=np.int64)
    classes = sorted({labels[i] for i in rows.tolist()})
    if len(classes) < 2:
        found = f"only the class {classes[0]!r}" if classes else "no labelled rows"
        raise AlexfeatError(
            f"a classifier needs at least two classes, and the labels give {found}. Put the "
            "images in one folder per class (the label is the first folder under the embedded "
            "root; a manifest's label column; a tar shard's .cls member), or pass --labels FILE.csv with "
            "path,label rows"
        )
    index = {label: i for i, label in enumerate(classes)}
    return classes, np.array([index[labels[i]] for i in rows.tolist()], dtype=np.int64), rows


def stratified_split(
    paths: Sequence[str], y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), sorted: per class, ``round(n × val_fraction)`` rows validate,
    chosen by ranking ``sha256(f"{seed}:{path}")``; every class keeps at least one training row."""
    train: list[int] = []
    val: list[int] = []
    for c in np.unique(y).tolist():
        members = np.flatnonzero(y == c).tolist()
        members.sort(key=lambda i: hashlib.sha256(f"{seed}:{paths[i]}".encode()).digest())
        n_val = min(round(len(members) * val_fraction), len(members) - 1)
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64)


def build_head(
    kind: str, dim: int, n_classes: int, mean: np.ndarray, variance: np.ndarray, l2: float, seed: int = 0
) -> tuple[Any, Any]:
    """(head, logits model): two Keras models sharing layers; the head ends in softmax, the other before it."""
    import keras

    floor = VARIANCE_FLOOR * float(np.mean(variance)) if variance.size else 0.0
    inputs = keras.Input(shape=(dim,), name="embedding")
    x = keras.layers.Normalization(mean=mean, variance=np.maximum(variance, floor), name="standardize")(inputs)
    regularizer = keras.regularizers.L2(l2) if l2 else None
    if kind == "mlp":
        x = keras.layers.Dense(
            HIDDEN_UNITS,
            activation="relu",
            kernel_regularizer=regularizer,
            kernel_initializer=keras.initializers.GlorotUniform(seed),
            name="hidden",
        )(x)
        x = keras.layers.Dropout(DROPOUT, seed=seed, name="dropout")(x)
    logits = keras.layers.Dense(
        n_classes,
        kernel_regularizer=regularizer,
        name="logits",
        kernel_initializer=keras.initializers.GlorotUniform(seed + 1),
    )(x)
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name=f"{kind}_head"), keras.Model(inputs, logits)


@dataclass
class _FitResult:
    epochs_run: int
    best_epoch: int


def _fit(
    logits_model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    settings: dict[str, Any],
    progress: bool | None,
) -> _FitResult:
    """Adam on shuffled minibatches, one compiled call per epoch; early stopping on the validation loss."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(settings["learning_rate"])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = tf.constant(x_train), tf.constant(y_train)
    xv, yv = tf.constant(x_val), tf.constant(y_val)
    batch = settings["batch_size"]
    steps = -(-len(x_train) // batch)
    variables = logits_model.trainable_variables

    @tf.function
    def epoch(order: tf.Tensor) -> tf.Tensor:
        for step in tf.range(steps):
            idx = order[step * batch : (step + 1) * batch]
            with tf.GradientTape() as tape:
                loss = loss_fn(tf.gather(y, idx), logits_model(tf.gather(x, idx), training=True))
                if logits_model.losses:
                    loss += tf.add_n(logits_model.losses)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss_fn(yv, logits_model(xv, training=False)) if len(x_val) else tf.constant(0.0)

    rng = np.random.default_rng(settings["seed"])
    max_epochs, patience = settings["epochs"], settings["patience"]
    best_loss, best_epoch, best_weights = np.inf, 0, None
    with Progress(max_epochs, "train", enabled=progress, unit="epoch") as bar:
        for n in range(1, max_epochs + 1):
            val_loss = float(epoch(tf.constant(rng.permutation(len(x_train)).astype(np.int32))))
            bar.update(1, val_loss=f"{val_loss:.4f}" if len(x_val) else "-")
            if not len(x_val):
                best_epoch = n
                continue
            if val_loss < best_loss - 1e-4:
                best_loss, best_epoch, best_weights = val_loss, n, [v.numpy() for v in variables]
            elif n - best_epoch >= patience:
                break
    if best_weights is not None:
        for variable, value in zip(variables, best_weights):
            variable.assign(value)
    return _FitResult(epochs_run=n, best_epoch=best_epoch)


def train_head(
    vectors: np.ndarray,
    paths: Sequence[str],
    labels: Sequence[str | None],
    config: TrainConfig = TrainConfig(),
    progress: bool | None = None,
) -> TrainedHead:
    """Train a head on L2-normalised ``vectors`` (N, dim) with one label per row (None rows are left out).

    Metrics: ``train_accuracy``/``val_accuracy`` (``None`` without a validation split), losses, timings and,
    on the validation split (the training split when there is none), per-class precision/recall/F1 and the
    confusion matrix.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) != len(labels) or len(paths) != len(labels):
        raise ValueError("vectors, paths and labels must have one entry per row")
    classes, y, rows = encode_labels(labels)
    row_paths = [paths[i] for i in rows.tolist()]
    train_idx, val_idx = stratified_split(row_paths, y, config.val_fraction, config.seed)
    if config.val_fraction > 0 and len(val_idx) == 0:
        raise AlexfeatError(
            f"--val-fraction {config.val_fraction} leaves no validation rows with "
            f"{len(rows)} labelled rows; label more images, raise it, or pass --val-fraction 0"
        )
    settings = config.resolved()
    x_all = vectors[rows]
    x_train, y_train, x_val, y_val = x_all[train_idx], y[train_idx], x_all[val_idx], y[val_idx]

    start = time.perf_counter()
    head, logits_model = build_head(
        config.kind,
        vectors.shape[1],
        len(classes),
        x_train.mean(axis=0),
        x_train.var(axis=0),
        settings["l2"],
        config.seed,
    )
    fit = _fit(logits_model, x_train, y_train, x_val, y_val, settings, progress)
    train_seconds = time.perf_counter() - start

    def evaluate(x: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, float | None]:
        if not len(x):
            return np.zeros(0, np.int64), None
        probabilities = head(x, training=False).numpy()
        loss = float(-np.mean(np.log(np.maximum(probabilities[np.arange(len(y_true)), y_true], 1e-12))))
        return probabilities.argmax(axis=1), loss

    train_pred, train_loss = evaluate(x_train, y_train)
    val_pred, val_loss = evaluate(x_val, y_val)
    report_on = "val" if len(val_idx) else "train"
    report = (
        classification_report(y_val, val_pred, classes)
        if len(val_idx)
        else classification_report(y_train, train_pred, classes)
    )
    metrics = {
        "train_accuracy": float(np.mean(train_pred == y_train)),
        "val_accuracy": report["accuracy"] if len(val_idx) else None,
        "train_seconds": round(train_seconds, 3),
        "train_loss": train_loss,
        "val_loss": val_loss,
        "epochs_run": fit.epochs_run,
        "best_epoch": fit.best_epoch,
        "train_count": len(train_idx),
        "val_count": len(val_idx),
        "unlabelled_skipped": int(len(labels) - len(rows)),
        "classes": len(classes),
        **settings,
        "split": SPLIT_METHOD,
        "report_split": report_on,
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
    }
    return TrainedHead(head, classes, metrics)
