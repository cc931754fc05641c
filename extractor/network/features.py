"""The embedding function: decoded uint8 images in, L2-normalised feature vectors out.

One :class:`FeatureExtractor` is :func:`extractor.network.model.AlexNet` (frozen, with the chosen layer and
pooling) + preprocessing + L2 normalisation, compiled once as a ``tf.function``. Its ``spec``, an
:class:`~extractor.network.spec.EmbeddingMeta`, is what the dataset records, so a later command (search by image,
predict) rebuilds exactly the same function with :meth:`FeatureExtractor.from_metadata`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from extractor.errors import AlexfeatError, WeightsError
from extractor.network.archs import DEFAULT_RESIZE, FC_UNITS, INPUT_SIZE, LAYERS, TTAS
from extractor.network.poolings import DEFAULT_POOLING, POOLINGS
from extractor.network.spec import EmbeddingMeta
from extractor.network.weights import Weights, resolve_weights

if TYPE_CHECKING:
    from extractor.images.batches import ImageResults
    from extractor.images.file_decoder import ImageInput


def _validate(layer: str, pooling: str, weights: Weights) -> str:
    """Check the layer/pooling pair; returns the pooling to record (``none`` for fc layers)."""
    if layer not in LAYERS:
        raise AlexfeatError(f"unknown layer {layer!r}: choose one of {', '.join(LAYERS)}")
    if layer == "pool5":
        if pooling not in POOLINGS:
            raise AlexfeatError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        return pooling
    if weights.source != "random" and not weights.has_fc:
        raise WeightsError(
            f"layer {layer} needs weights with fully connected layers, and {weights.source!r} "
            "has conv1-conv5 only: use --layer pool5, or weights with fc6-fc8 ('imagenet' or a "
            "full torchvision .pth)"
        )
    return "none"


class FeatureExtractor:
    """Frozen AlexNet + pooling + L2 normalisation, compiled once, applied to uint8 RGB batches."""

    def __init__(
        self,
        weights: str | Weights = "imagenet",
        arch: str | None = None,
        layer: str = "pool5",
        pooling: str = DEFAULT_POOLING,
        resize: str | None = None,
        tta: str = "none",
    ) -> None:
        from extractor.images.decode import ResizeSpec

        if tta not in TTAS:
            raise AlexfeatError(f"unknown test-time augmentation {tta!r}: choose one of {', '.join(TTAS)}")

        self.weights = resolve_weights(weights, arch) if isinstance(weights, str) else weights
        arch = self.weights.check_arch(arch)
        pooling = _validate(layer, pooling, self.weights)
        size = INPUT_SIZE[arch]
        self.resize_spec = ResizeSpec.parse(resize or DEFAULT_RESIZE[arch])
        if self.resize_spec.output_size != size:
            raise AlexfeatError(
                f"resize {resize!r} gives {self.resize_spec.output_size} px images, the {arch} network needs {size}"
            )
        self.spec = EmbeddingMeta(
            arch=arch,
            weights_source=self.weights.source,
            weights_sha256=self.weights.sha256,
            layer=layer,
            pooling=pooling,
            input_size=size,
            resize=str(self.resize_spec),
            dim=POOLINGS[pooling].dim if layer == "pool5" else FC_UNITS,
            tta=tta,
        )
        self._model: Any = None
        self._compiled: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The Keras model from uint8 images to unnormalised features (built, with TensorFlow, on first use)."""
        self.warm_up()
        return self._model

    def warm_up(self) -> None:
        """Import TensorFlow, build the model and trace the compiled function; safe to run in another thread."""
        with self._lock:
            if self._compiled is None:
                spec = self.spec
                self._model = self._build(spec.arch, spec.layer, spec.pooling, spec.tta)
                if int(self._model.output_shape[-1]) != spec.dim:
                    raise AlexfeatError(f"model gives {self._model.output_shape[-1]}-d features, expected {spec.dim}")
                self._compiled = self._compile()
                size = spec.input_size
                self._compiled(np.zeros((1, size, size, 3), np.uint8))  # trace once, before the first batch

    def _build(self, arch: str, layer: str, pooling: str, tta: str = "none") -> Any:
        """The Keras model from uint8 images to unnormalised features: Preprocess, then AlexNet up to ``layer``
        (pooled with ``pooling`` at pool5); with ``tta="flip"`` the mean of the L2-normalised features of the
        image and of its mirror (two forward passes)."""
        import keras

        from extractor.network.layers import HorizontalMirror
        from extractor.network.model import AlexNet, Preprocess

        if layer == "pool5":
            features = AlexNet(weights=self.weights, include_top=False, pooling=pooling, trainable=False)
        else:
            base = AlexNet(weights=self.weights, include_top=True, classifier_activation=None, trainable=False)
            features = keras.Model(base.input, base.get_layer(layer).output)
        inputs = keras.Input(shape=features.input_shape[1:], dtype="uint8", name="image")
        preprocessed = Preprocess(arch, name="preprocess")(inputs)
        outputs = features(preprocessed)
        if tta == "flip":
            mirrored = features(HorizontalMirror(name="mirror")(preprocessed))
            outputs = keras.layers.Average(name="tta_mean")(
                [
                    keras.layers.UnitNormalization(name=f"l2_{view}")(v)
                    for view, v in (("image", outputs), ("mirror", mirrored))
                ]
            )
        suffix = "" if tta == "none" else f"_tta_{tta}"
        return keras.Model(inputs, outputs, name=f"alexnet_{arch}_{layer}_{pooling}{suffix}")

    def _compile(self) -> Any:
        import tensorflow as tf

        model = self._model
        size = self.spec.input_size

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)], reduce_retracing=True)
        def embed(images: tf.Tensor) -> tf.Tensor:
            return tf.math.l2_normalize(model(images, training=False), axis=-1, epsilon=1e-12)

        return embed

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Embed a batch of RGB uint8 images (N, S, S, 3) at the input size; returns float32 (N, dim)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.spec.input_size, self.spec.input_size, 3):
            raise AlexfeatError(
                f"expected images of shape (N, {self.spec.input_size}, {self.spec.input_size}, 3), got {images.shape}"
            )
        if len(images) == 0:
            return np.zeros((0, self.spec.dim), np.float32)
        self.warm_up()
        return self._compiled(images.astype(np.uint8, copy=False)).numpy()

    def embed_images(
        self,
        inputs: Sequence[ImageInput],
        max_pixels: int | None = None,
        batch_size: int = 32,
        workers: int = 2,
        names: Sequence[str] | None = None,
    ) -> ImageResults:
        """Decode image files or bytes (in ``workers`` threads) and embed them in batches, keeping their order.

        Returns ``values`` (float32 (n, dim)) of the inputs that decoded, their ``indices`` among ``inputs``, and a
        ``(position, name, error kind, message)`` per input that did not; a bad input never stops the others.
        """
        from extractor.images.batches import map_images
        from extractor.images.decode import DEFAULT_MAX_PIXELS

        return map_images(
            self, self.spec.dim, inputs, self.resize_spec, max_pixels or DEFAULT_MAX_PIXELS, batch_size, workers, names
        )

    @classmethod
    def from_metadata(cls, meta: EmbeddingMeta, weights: str | None = None) -> FeatureExtractor:
        """Rebuild the extractor a dataset was made with; ``weights`` overrides the recorded source.

        A weights file whose sha256 differs from the recorded one is refused.
        """
        source = weights or meta.weights_source
        try:
            resolved = resolve_weights(source, meta.arch)
        except WeightsError as exc:
            raise WeightsError(
                f"{exc}\nThe embeddings were made with weights {meta.weights_source!r}; pass "
                "--weights with that file (or a copy of it) on this machine."
            ) from None
        if resolved.sha256 != meta.weights_sha256:
            raise WeightsError(
                f"weights {source!r} (sha256 {resolved.sha256[:12]}...) are not the ones the "
                f"embeddings were made with (sha256 {meta.weights_sha256[:12]}..., from "
                f"{meta.weights_source!r})"
            )
        extractor = cls(resolved, meta.arch, meta.layer, meta.pooling, meta.resize, meta.tta)
        meta.check_compatible(
            extractor.spec, "the rebuilt extractor differs from the recorded settings (recorded != rebuilt)"
        )
        return extractor
