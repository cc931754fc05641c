"""AlexNet's custom Keras layers, registered as serialisable at import (package ``alexfeat``), so a saved
``.keras`` file loads back in a process that imports this module (or :mod:`extractor.network.model`)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from extractor.network.archs import CAFFE_MEAN_RGB, TORCH_MEAN, TORCH_STD, check_arch


def preprocessing_affine(arch: str) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessing of ``arch`` as ``(x - offset) * scale`` per RGB channel, for x in 0..255."""
    if check_arch(arch) == "caffe":
        return np.array(CAFFE_MEAN_RGB, np.float32), np.ones(3, np.float32)
    mean = np.array(TORCH_MEAN, np.float32) * 255.0
    scale = 1.0 / (np.array(TORCH_STD, np.float32) * 255.0)
    return mean, scale


@keras.saving.register_keras_serializable(package="alexfeat")
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel LRN: ``x / (bias + alpha * sum_{|c'-c|<=r} x_{c'}^2) ** beta`` (alpha not divided by n)."""

    def __init__(
        self, depth_radius: int = 2, bias: float = 2.0, alpha: float = 1e-4, beta: float = 0.75, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def call(self, x: Any) -> Any:
        return tf.nn.local_response_normalization(
            x, depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }


@keras.saving.register_keras_serializable(package="alexfeat")
class Preprocess(keras.layers.Layer):
    """:func:`extractor.network.model.preprocess_input` as a layer (RGB 0..255 of any dtype in), for end-to-end
    models."""

    def __init__(self, arch: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arch = check_arch(arch)
        offset, scale = preprocessing_affine(self.arch)
        self._offset = tf.constant(offset)
        self._scale = tf.constant(scale)

    def call(self, x: Any) -> Any:
        return (tf.cast(x, tf.float32) - self._offset) * self._scale

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "arch": self.arch}


@keras.saving.register_keras_serializable(package="alexfeat")
class GeneralizedMeanPooling(keras.layers.Layer):
    """GeM pooling over H and W: ``mean(x ** p) ** (1 / p)`` of non-negative (post-ReLU) maps."""

    def __init__(self, p: float = 3.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.p = float(p)

    def call(self, x: Any) -> Any:
        return tf.pow(tf.reduce_mean(tf.pow(tf.maximum(x, 1e-6), self.p), axis=[1, 2]), 1.0 / self.p)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "p": self.p}


def _spread(size: int, side: int, count: int) -> list[int]:
    """Starts of ``count`` windows of ``side`` cells spread evenly from edge to edge of ``size`` cells."""
    if count == 1:
        return [(size - side) // 2]
    step = (size - side) / (count - 1)
    return sorted({int(round(i * step)) for i in range(count)})


def rmac_regions(height: int, width: int, scales: int = 3, overlap: float = 0.4) -> list[tuple[int, int, int]]:
    """The square regions of R-MAC (Tolias, Sicre, Jégou, ICLR 2016) on a ``height`` x ``width`` map, as
    (top, left, side): at scale l = 1..``scales``, squares of side ``2 min(H, W) / (l + 1)``, l per side (plus
    extra ones along a longer side, chosen for an ``overlap`` near 40 %), spread evenly from edge to edge."""
    short, long_ = min(height, width), max(height, width)
    extra = 0
    if long_ > short:  # extra regions along the longer side, so consecutive ones overlap by about `overlap`
        steps = np.arange(2, 7)
        shift = (long_ - short) / (steps - 1)
        extra = int(steps[np.argmin(np.abs((short**2 - short * shift) / short**2 - overlap))] - 1)
    regions = []
    for level in range(1, scales + 1):
        side = int(np.floor(2 * short / (level + 1)))
        if side < 1:
            break
        tops = _spread(height, side, level + (extra if height > width else 0))
        lefts = _spread(width, side, level + (extra if width > height else 0))
        regions += [(top, left, side) for top in tops for left in lefts]
    return regions


@keras.saving.register_keras_serializable(package="alexfeat")
class RegionalMaxPooling(keras.layers.Layer):
    """R-MAC: the maximum of each :func:`rmac_regions` square of the maps, each L2-normalised, summed (the
    caller normalises the sum)."""

    def __init__(self, scales: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scales = int(scales)

    def call(self, x: Any) -> Any:
        height, width = int(x.shape[1]), int(x.shape[2])
        total = 0.0
        for top, left, side in rmac_regions(height, width, self.scales):
            region = tf.reduce_max(x[:, top : top + side, left : left + side, :], axis=[1, 2])
            total = total + tf.math.l2_normalize(region, axis=-1, epsilon=1e-12)
        return total

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scales": self.scales}


@keras.saving.register_keras_serializable(package="alexfeat")
class HorizontalMirror(keras.layers.Layer):
    """The images (NHWC) mirrored left to right: the second view of ``tta="flip"``."""

    def call(self, x: Any) -> Any:
        return tf.reverse(x, axis=[2])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape
