"""AlexNet for Keras, in the style of ``keras.applications``: one function builds the model.

Two published architectures (tables in :mod:`extractor.network.archs`):

- ``caffe``: Krizhevsky et al. 2012 as in BVLC/Caffe: 96-256-384-384-256 filters, conv2/4/5 in two groups,
  local response normalisation after the max-pool of blocks 1 and 2, input 227 x 227.
- ``torchvision``: the "one weird trick" variant of ``torchvision.models.alexnet``: 64-192-384-256-256 filters,
  no groups, no LRN, input 224 x 224.

The model takes preprocessed NHWC float input (see :func:`preprocess_input`), as keras.applications models do;
``pooling`` is any entry of :data:`extractor.network.poolings.POOLINGS`. Every layer is serialisable: a saved
``.keras`` file loads back in a process that imports this module (the custom layers of
:mod:`extractor.network.layers` are registered at import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from extractor.errors import AlexfeatError, WeightsError
from extractor.network.archs import (
    ARCHS,
    CONV_LAYERS,
    CONVS,
    FC_LAYERS,
    FC_UNITS,
    INPUT_SIZE,
    POOL5_SHAPE,
    check_arch,
    flops_per_image,
)
from extractor.network.layers import (
    GeneralizedMeanPooling,
    LocalResponseNormalization,
    Preprocess,
    preprocessing_affine,
)
from extractor.network.poolings import POOLINGS

if TYPE_CHECKING:
    from extractor.network.weights import Weights

__all__ = [
    "AlexNet",
    "preprocess_input",
    "LocalResponseNormalization",
    "Preprocess",
    "GeneralizedMeanPooling",
    "ARCHS",
    "INPUT_SIZE",
    "CONV_LAYERS",
    "FC_LAYERS",
    "POOL5_SHAPE",
    "POOLINGS",
    "flops_per_image",
]


def preprocess_input(x: Any, arch: str | keras.Model) -> np.ndarray:
    """Preprocess RGB images with values in 0..255 (NHWC or HWC) for :func:`AlexNet` of ``arch``.

    ``arch`` is ``"caffe"`` or ``"torchvision"``, or the model itself (its architecture read from conv1).
    ``caffe`` subtracts the per-channel training mean; ``torchvision`` maps to [0, 1] and then normalises
    with the ImageNet mean and standard deviation. Returns float32.

    Input that cannot be RGB 0..255 is refused (AlexfeatError) instead of giving garbage features: not 3 channels
    last, values outside 0..255 (already preprocessed?), or floats no larger than 1 (0..1 images: multiply by 255).
    """
    name = _arch_of(arch) if isinstance(arch, keras.Model) else check_arch(arch)
    pixels = np.asarray(x)
    if pixels.ndim not in (3, 4) or pixels.shape[-1] != 3:
        raise AlexfeatError(
            f"preprocess_input expects RGB images, 3 channels last (HWC or NHWC), got shape {pixels.shape}"
        )
    if pixels.size and pixels.dtype != np.uint8:
        low, high = float(np.min(pixels)), float(np.max(pixels))
        if low < 0.0 or high > 255.0 or not np.isfinite(low + high):
            raise AlexfeatError(
                f"preprocess_input expects RGB values in 0..255, got {low:.3g}..{high:.3g}: pass the decoded "
                "pixels, not already preprocessed ones"
            )
        if 0.0 < high <= 1.0:
            raise AlexfeatError(
                f"preprocess_input expects RGB values in 0..255, got {low:.3g}..{high:.3g} (images in 0..1?): "
                "multiply them by 255 first"
            )
    offset, scale = preprocessing_affine(name)
    return (pixels.astype(np.float32, copy=False) - offset) * scale


def _arch_of(model: keras.Model) -> str:
    """The architecture of a model built by :func:`AlexNet`, from its conv1 (96 filters: caffe, 64: torchvision)."""
    try:
        filters = model.get_layer("conv1").filters
    except ValueError:
        raise AlexfeatError(f"model {model.name!r} has no conv1 layer: it was not built by AlexNet()") from None
    found = [arch for arch in CONVS if CONVS[arch][0].filters == filters]
    if len(found) != 1:
        raise AlexfeatError(f"model {model.name!r}: conv1 has {filters} filters, not an AlexNet architecture")
    return found[0]


def AlexNet(
    arch: str | None = None,
    weights: str | Weights | None = "imagenet",
    include_top: bool = False,
    pooling: str | None = "avg",
    input_shape: tuple[int | None, int | None, int] | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    trainable: bool = True,
    name: str | None = None,
) -> keras.Model:
    """Build AlexNet, optionally loading pretrained weights.

    Args:
        arch: ``"caffe"`` or ``"torchvision"``; ``None`` takes it from the weights (``"random"`` or ``None``
            weights mean ``"torchvision"``). Asking for an architecture the weights do not have is an error.
        weights: ``"imagenet"`` (torchvision checkpoint, downloaded once), a path to a ``.pth``, caffe-layout
            ``.npz`` or ``.weights.h5`` file, ``"random"`` (seeded initialisation), ``None`` (Keras default
            initialisation) or an already resolved :class:`extractor.network.weights.Weights`.
        include_top: add fc6, fc7 and the classifier (needs weights with fc layers, or random weights).
        pooling: with ``include_top=False``: ``None`` returns the pool5 maps, a name in
            :data:`~extractor.network.poolings.POOLINGS` (``"avg"``, ``"max"``, ``"gem"``, ``"flatten"``) pools
            the conv features into one vector.
        input_shape: (H, W, 3); defaults to the architecture's input size. Other sizes only without the top.
        classes: classifier outputs with ``include_top`` (1000 for pretrained weights).
        classifier_activation: activation of the classifier; ``None`` returns logits.
        trainable: whether the returned model's layers are trainable.
    """
    from extractor.network.weights import resolve_weights

    resolved = weights if (weights is None or not isinstance(weights, str)) else resolve_weights(weights, arch)
    if resolved is None:
        arch = check_arch(arch or "torchvision")
    else:
        arch = resolved.check_arch(arch)
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"pooling must be None or one of {', '.join(POOLINGS)}, got {pooling!r}")
    size = INPUT_SIZE[arch]
    if input_shape is None:
        input_shape = (size, size, 3)
    if include_top:
        if tuple(input_shape) != (size, size, 3):
            raise ValueError(f"include_top=True needs input_shape {(size, size, 3)}, got {input_shape}")
        if resolved is not None and resolved.tensors and not resolved.has_fc:
            raise WeightsError(
                f"weights {resolved.source!r} have no fc6/fc7/fc8 layers, so include_top=True "
                "cannot load them: use include_top=False, or weights with the classifier "
                "('imagenet' or a full torchvision .pth)"
            )
        if resolved is not None and resolved.has_fc and classes != 1000:
            raise ValueError(
                "pretrained classifier weights have 1000 classes; use classes=1000 or "
                "include_top=False with a head of your own"
            )

    seeded = resolved is not None and resolved.source == "random"
    inputs = keras.Input(shape=input_shape, name="input")
    x = _features(inputs, arch, seeded)
    if include_top:
        x = _classifier(x, classes, classifier_activation, seeded)
    elif pooling is not None:
        x = POOLINGS[pooling].build(keras.Model(inputs, x, name="conv_base"))
    model = keras.Model(inputs, x, name=name or f"alexnet_{arch}")
    if resolved is not None and resolved.tensors:
        resolved.load_into(model)
    model.trainable = trainable
    return model


def _initializers(seeded: bool, index: int) -> dict[str, Any]:
    """He-normal kernels with a fixed seed per layer for ``weights='random'``, Keras defaults otherwise."""
    if not seeded:
        return {}

    return {"kernel_initializer": keras.initializers.HeNormal(seed=1000 + index), "bias_initializer": "zeros"}


def _features(x: Any, arch: str, seeded: bool) -> Any:
    """conv1-conv5 with their ReLU, pools and LRN: NHWC in, pool5 maps (N, 6, 6, 256) out at the native size."""

    for i, spec in enumerate(CONVS[arch]):
        block = spec.name[-1]
        padding = "valid"
        if spec.pad and spec.stride == 1 and spec.pad == spec.kernel // 2:
            padding = "same"
        elif spec.pad:
            x = keras.layers.ZeroPadding2D(spec.pad, name=f"pad{block}")(x)
        x = keras.layers.Conv2D(
            spec.filters,
            spec.kernel,
            strides=spec.stride,
            padding=padding,
            groups=spec.groups,
            activation="relu",
            name=spec.name,
            **_initializers(seeded, i),
        )(x)
        if spec.pool:
            x = keras.layers.MaxPooling2D(3, 2, name=f"pool{block}")(x)
        if spec.lrn:
            x = LocalResponseNormalization(name=f"norm{block}")(x)
    return x


def _classifier(x: Any, classes: int, activation: str | None, seeded: bool) -> Any:
    """fc6 and fc7 (4096, ReLU, dropout before each, as torchvision) and the classifier."""

    # Torch flattens pool5 as (C, H, W); the weight converter permutes fc6 so that Keras's (H, W, C) order
    # gives the same outputs.
    x = keras.layers.Flatten(name="flatten")(x)
    for i, name in enumerate(("fc6", "fc7")):
        x = keras.layers.Dropout(0.5, name=f"drop{name[-1]}")(x)
        x = keras.layers.Dense(FC_UNITS, activation="relu", name=name, **_initializers(seeded, 10 + i))(x)
    return keras.layers.Dense(classes, activation=activation, name="predictions", **_initializers(seeded, 12))(x)
