"""The global poolings of AlexNet's conv features: one table, :data:`POOLINGS`, name → :class:`Pooling`.

``AlexNet(pooling=NAME)``, :class:`extractor.network.features.FeatureExtractor` and ``alexfeat embed --pooling``
all take their choices from it, so a new pooling is one entry here. Importing this module loads no TensorFlow
(the CLI lists the names from it): each builder imports Keras when a model is built.

A builder gets the convolutional base, a Keras model from the preprocessed input to the pool5 maps whose layers
keep their names (``base.output`` is pool5; ``base.get_layer("conv5").output`` is the last convolution's ReLU
output, before its max-pool), and returns the pooled (N, dim) tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from extractor.network.archs import POOL5_SHAPE

DEFAULT_POOLING = "gem"  # best measured for retrieval and linear probes (docs/design.md)
RMAC_SCALES = 3  # R-MAC: square regions at 3 scales (1 + 4 + 9 on AlexNet's 13 x 13 conv5 maps)


@dataclass(frozen=True)
class Pooling:
    """How to pool the conv features into one vector."""

    build: Callable[[Any], Any]  # conv base (keras.Model, input → pool5) → pooled (N, dim) tensor
    dim: int  # output width at the architecture's native input size
    about: str  # one phrase for --help


def _avg(base: Any) -> Any:
    import keras

    return keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)


def _max(base: Any) -> Any:
    import keras

    return keras.layers.GlobalMaxPooling2D(name="max_pool")(base.output)


def _gem(base: Any) -> Any:
    from extractor.network.layers import GeneralizedMeanPooling

    return GeneralizedMeanPooling(name="gem_pool")(base.output)


def _rmac(base: Any) -> Any:
    from extractor.network.layers import RegionalMaxPooling

    return RegionalMaxPooling(RMAC_SCALES, name="rmac_pool")(base.get_layer("conv5").output)


def _flatten(base: Any) -> Any:
    import keras

    return keras.layers.Flatten(name="flatten")(base.output)


POOLINGS: dict[str, Pooling] = {
    "avg": Pooling(_avg, POOL5_SHAPE[-1], "mean of the maps"),
    "max": Pooling(_max, POOL5_SHAPE[-1], "maximum of the maps"),
    "gem": Pooling(_gem, POOL5_SHAPE[-1], "generalised mean, p=3; best measured"),
    "rmac": Pooling(_rmac, POOL5_SHAPE[-1], "R-MAC: regional maxima of conv5 at 3 scales, each L2-normalised, summed"),
    "flatten": Pooling(_flatten, math.prod(POOL5_SHAPE), f"the {math.prod(POOL5_SHAPE)}-d maps"),
}
