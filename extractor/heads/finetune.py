"""Fine-tune the last conv layers of the base together with a trained head, end to end on an image folder.

The classic recipe's second step: start from a head trained on cached embeddings (``alexfeat train``), unfreeze
the last ``unfreeze`` conv layers (default 3: conv3-conv5), and train them and the head with a small learning rate
on augmented images. The input pipeline is ``tf.data``: files are decoded by alexfeat's decoder (in parallel
threads, through ``tf.numpy_function``), kept in memory when they fit, then randomly cropped and flipped:

- training images are decoded with the resize policy's crop widened to the whole resized square (e.g.
  ``squash256-center256`` for ``squash256-center227``; 1/8 larger for a policy without a crop), then a random
  window of the input size is cut out and flipped left-right half the time;
- validation images are decoded exactly as ``predict`` decodes them.

The validation split is the one ``alexfeat train`` uses (same seed and fraction by default, stratified by path),
so on the same images the accuracy before fine-tuning is the head's validation accuracy. The weights kept are
those of the epoch with the lowest validation loss (cross-entropy, measured after each epoch as before the
first), counting the starting point: fine-tuning never returns a model worse on validation than the head it
started from. In the metrics, ``train_accuracy`` and ``history.loss``/``history.accuracy`` are Keras's running
figures over the augmented training batches (the loss includes the head's L2 penalty).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from extractor.errors import AlexfeatError
from extractor.heads.classifier_dir import ClassifierDir
from extractor.heads.metrics import classification_report
from extractor.heads.train import SPLIT_METHOD, stratified_split
from extractor.images.decode import DEFAULT_MAX_PIXELS, DecodeError, ResizeSpec, decode_image
from extractor.images.discover import discover, label_of
from extractor.network.archs import CONV_LAYERS
from extractor.util.progress import Progress


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning settings; ``val_fraction``/``seed`` default to those the head was trained with."""

    unfreeze: int = 3
    learning_rate: float = 1e-5
    epochs: int = 5
    batch_size: int = 32
    patience: int = 2
    val_fraction: float | None = None
    seed: int | None = None
    cache_bytes: int = 1 << 30  # decoded images are kept in memory below this
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if not 0 <= self.unfreeze <= len(CONV_LAYERS):
            raise AlexfeatError(f"--unfreeze must be between 0 and {len(CONV_LAYERS)} conv layers, not {self.unfreeze}")
        if self.epochs < 1 or self.batch_size < 1:
            raise AlexfeatError("--epochs and --batch-size must be at least 1")
        if not self.learning_rate > 0:
            raise AlexfeatError(f"--lr must be positive, not {self.learning_rate}")
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise AlexfeatError(f"--val-fraction must be above 0 and below 1, not {self.val_fraction}")


@dataclass
class FinetuneResult:
    model: Any  # uint8 images → probabilities
    classes: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)


def training_resize(spec: ResizeSpec) -> ResizeSpec:
    """The decode policy for training images: the resized square before the centre crop (random crops come
    from it)."""
    if spec.crop is not None and spec.crop < spec.size:
        return ResizeSpec(spec.mode, spec.size, spec.size)
    size = spec.output_size + spec.output_size // 8
    return ResizeSpec(spec.mode, size, size)


def unfreeze_layers(model: Any, count: int) -> list[str]:
    """Make the head (the model's last layer) and the last ``count`` conv layers of the base trainable, and
    everything else frozen; returns the names of the unfrozen conv layers."""

    def leaves(layer: Any) -> list[Any]:
        if isinstance(layer, keras.Model):
            return [leaf for sub in layer.layers for leaf in leaves(sub)]
        return [layer]

    names = set(CONV_LAYERS[len(CONV_LAYERS) - count :]) if count else set()
    model.trainable = True
    head = {id(layer) for layer in leaves(model.layers[-1])}
    unfrozen = []
    for layer in leaves(model):
        if id(layer) in head:
            continue
        layer.trainable = layer.name in names
        if layer.trainable:
            unfrozen.append(layer.name)
    missing = names - set(unfrozen)
    if missing:
        raise AlexfeatError(f"the model has no layers {sorted(missing)} to unfreeze")
    return sorted(unfrozen)


class _Decoder:
    """Decode one path for tf.numpy_function; failures become (blank image, False) and are remembered."""

    def __init__(self, resize: ResizeSpec, max_pixels: int) -> None:
        self.resize, self.max_pixels = resize, max_pixels
        self.errors: dict[str, str] = {}

    def __call__(self, path: bytes) -> tuple[np.ndarray, np.bool_]:
        name = path.decode("utf-8")
        try:
            return decode_image(name, self.resize, self.max_pixels).pixels, np.bool_(True)
        except DecodeError as exc:
            self.errors[name] = f"{exc.kind}: {exc}"
            size = self.resize.output_size
            return np.zeros((size, size, 3), np.uint8), np.bool_(False)


def _dataset(
    paths: Sequence[str], y: np.ndarray, decoder: _Decoder, config: FinetuneConfig, crop: int | None, seed: int
) -> Any:
    """A tf.data pipeline of (uint8 image batch, label batch); ``crop``: random crops and flips of that size."""
    import tensorflow as tf

    side = decoder.resize.output_size

    def decode(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        pixels, ok = tf.numpy_function(decoder, [path], [tf.uint8, tf.bool], stateful=False)
        pixels.set_shape((side, side, 3))
        ok.set_shape(())
        return pixels, label, ok

    ds = tf.data.Dataset.from_tensor_slices((list(paths), y.astype(np.int32)))
    ds = ds.map(decode, num_parallel_calls=max(1, config.workers))
    ds = ds.filter(lambda pixels, label, ok: ok).map(lambda pixels, label, ok: (pixels, label))
    if len(paths) * side * side * 3 <= config.cache_bytes:
        ds = ds.cache()
    if crop is not None:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

        def augment(pixels: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            pixels = tf.image.random_crop(pixels, (crop, crop, 3), seed=seed)
            return tf.image.random_flip_left_right(pixels, seed=seed), label

        ds = ds.map(augment, num_parallel_calls=max(1, config.workers))
    return ds.batch(config.batch_size).prefetch(2)


def _evaluate(model: Any, ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, predicted probabilities) over a dataset, in inference mode."""
    labels, probabilities = [], []
    for images, y in ds:
        probabilities.append(model(images, training=False).numpy())
        labels.append(y.numpy())
    if not labels:
        return np.zeros(0, np.int64), np.zeros((0, model.output_shape[-1]), np.float32)
    return np.concatenate(labels).astype(np.int64), np.concatenate(probabilities)


def _loss_and_accuracy(y: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    picked = probabilities[np.arange(len(y)), y]
    return (float(-np.mean(np.log(np.maximum(picked, 1e-7)))), float(np.mean(probabilities.argmax(axis=1) == y)))


def _labelled_files(images_dir: str, classes: Sequence[str]) -> tuple[list[str], list[str], np.ndarray, int]:
    """(relative paths, absolute paths, class indices, files skipped for lack of a class folder)."""
    index = {label: i for i, label in enumerate(classes)}
    rel, absolute, y, skipped, unknown = [], [], [], 0, set()
    for entry in discover(images_dir):
        label = label_of(entry.path)
        if label is None:
            skipped += 1
        elif label not in index:
            unknown.add(label)
        else:
            rel.append(entry.path)
            absolute.append(entry.abs_path)
            y.append(index[label])
    if unknown:
        shown = ", ".join(repr(u) for u in sorted(unknown)[:5]) + (", ..." if len(unknown) > 5 else "")
        raise AlexfeatError(
            f"{images_dir} has class folders the head does not know ({shown}); its classes are "
            f"{', '.join(classes)}. Move those folders out, or train a head that has them"
        )
    if not rel:
        raise AlexfeatError(f"{images_dir} holds no images in class folders: put them in one folder per class")
    return rel, absolute, np.array(y, dtype=np.int64), skipped


def finetune(
    images_dir: str,
    source: ClassifierDir,
    config: FinetuneConfig = FinetuneConfig(),
    weights: str | None = None,
    progress: bool | None = None,
) -> FinetuneResult:
    """Fine-tune ``source`` (a head or fine-tuned directory) on the class folders of ``images_dir``."""
    seed = config.seed if config.seed is not None else int(source.metrics.get("seed", 0))
    val_fraction = config.val_fraction or float(source.metrics.get("val_fraction") or 0.2)
    rel, absolute, y, skipped = _labelled_files(images_dir, source.classes)
    train_idx, val_idx = stratified_split(rel, y, val_fraction, seed)
    if not len(val_idx):
        raise AlexfeatError(
            f"{images_dir} has too few images for a validation split ({len(rel)}); add images or raise --val-fraction"
        )
    model = source.end_to_end(weights)
    unfrozen = unfreeze_layers(model, config.unfreeze)
    resize = source.resize_spec
    train_decoder = _Decoder(training_resize(resize), config.max_pixels)
    val_decoder = _Decoder(resize, config.max_pixels)
    train_ds = _dataset([absolute[i] for i in train_idx], y[train_idx], train_decoder, config, resize.output_size, seed)
    val_ds = _dataset([absolute[i] for i in val_idx], y[val_idx], val_decoder, config, None, seed)

    start = time.perf_counter()
    y_val, probabilities = _evaluate(model, val_ds)
    if not len(y_val):
        raise AlexfeatError(f"none of the {len(val_idx)} validation images in {images_dir} could be decoded")
    loss_before, acc_before = _loss_and_accuracy(y_val, probabilities)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    keeper = _KeepBest(lambda: _loss_and_accuracy(*_evaluate(model, val_ds)), loss_before, config.patience)
    with Progress(config.epochs * len(train_idx), "finetune", enabled=progress) as bar, warnings.catch_warnings():
        # The pipeline's length is unknown until the first epoch ends (files that fail to decode drop out).
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(
            train_ds,
            epochs=config.epochs,
            verbose=0,
            shuffle=False,
            callbacks=[keeper, _ProgressCallback(bar, config.batch_size, len(train_idx))],
        )
    train_seconds = time.perf_counter() - start
    y_val, probabilities = _evaluate(model, val_ds)
    loss_after, acc_after = _loss_and_accuracy(y_val, probabilities)
    report = classification_report(y_val, probabilities.argmax(axis=1), source.classes)
    errors = {**train_decoder.errors, **val_decoder.errors}
    best = keeper.best_epoch
    metrics = {
        "train_accuracy": float(history.history["accuracy"][best - 1]) if best else None,
        "val_accuracy": acc_after,
        "val_accuracy_before": acc_before,
        "val_loss": loss_after,
        "val_loss_before": loss_before,
        "train_seconds": round(train_seconds, 3),
        "epochs_run": len(history.history["loss"]),
        "best_epoch": best,
        "history": {
            name: [round(float(v), 5) for v in values]
            for name, values in {
                **history.history,
                "val_loss": keeper.val_loss,
                "val_accuracy": keeper.val_accuracy,
            }.items()
        },
        "unfrozen_layers": unfrozen,
        "unfreeze": config.unfreeze,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "augmentation": f"decode {training_resize(resize)}, random {resize.output_size}px crop, random flip",
        "train_count": len(train_idx) - len(train_decoder.errors),  # images used (files that decoded)
        "val_count": len(val_idx) - len(val_decoder.errors),
        "unlabelled_skipped": skipped,
        "decode_errors": len(errors),
        "decode_error_examples": dict(sorted(errors.items())[:10]),
        "classes": len(source.classes),
        "val_fraction": val_fraction,
        "seed": seed,
        "split": SPLIT_METHOD,
        "report_split": "val",
        "finetuned_from": str(source.path.resolve()),
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
    }
    return FinetuneResult(model, list(source.classes), metrics)


class _KeepBest(keras.callbacks.Callback):
    """After each epoch, measure the validation loss (cross-entropy alone, as before training: Keras's own
    ``val_loss`` would add the head's L2 penalty); keep the weights with the lowest, the starting point included;
    stop after ``patience`` epochs without improvement; restore the best weights at the end."""

    def __init__(self, evaluate: Callable[[], tuple[float, float]], start_loss: float, patience: int) -> None:
        super().__init__()
        self.evaluate, self.best_loss, self.patience = evaluate, start_loss, patience
        self.best_epoch = 0  # 0: the starting weights
        self.best_weights: list[np.ndarray] | None = None
        self.val_loss: list[float] = []
        self.val_accuracy: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best_weights = self.model.get_weights()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss, accuracy = self.evaluate()
        self.val_loss.append(loss)
        self.val_accuracy.append(accuracy)
        if loss < self.best_loss:  # False for NaN: a diverged epoch is never kept
            self.best_loss, self.best_epoch, self.best_weights = loss, epoch + 1, self.model.get_weights()
        elif epoch + 1 - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class _ProgressCallback(keras.callbacks.Callback):
    """Advance a progress bar by the images of each training batch."""

    def __init__(self, bar: Progress, batch_size: int, per_epoch: int) -> None:
        super().__init__()
        self.bar, self.batch_size, self.per_epoch = bar, batch_size, per_epoch
        self.seen = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.seen = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        n = max(0, min(self.batch_size, self.per_epoch - self.seen))
        self.seen += n
        self.bar.update(n)
