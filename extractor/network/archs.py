"""AlexNet tables (no TensorFlow): architectures, layer specs, input sizes, resize defaults, feature layers,
preprocessing constants, FLOPs. The CLI's choices come from here (and from :mod:`extractor.network.poolings`)."""

from __future__ import annotations

from dataclasses import dataclass

from extractor.errors import WeightsError

ARCHS = ("caffe", "torchvision")
INPUT_SIZE = {"caffe": 227, "torchvision": 224}
# The decoder's resize policy each architecture's weights were trained with (see extractor.images.decode.ResizeSpec).
DEFAULT_RESIZE = {"caffe": "squash256-center227", "torchvision": "shorter256-center224"}
# Per-channel RGB training mean of the caffe-layout weights (0..255), from their 256 x 256 mean image.
CAFFE_MEAN_RGB = (122.226, 116.209, 103.565)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ConvSpec:
    """One convolution of the feature extractor."""

    name: str
    filters: int
    kernel: int
    stride: int
    pad: int
    groups: int
    pool: bool  # followed by max-pool 3/2
    lrn: bool  # followed by LRN (after the pool)


CONVS: dict[str, tuple[ConvSpec, ...]] = {
    "caffe": (
        ConvSpec("conv1", 96, 11, 4, 0, 1, True, True),
        ConvSpec("conv2", 256, 5, 1, 2, 2, True, True),
        ConvSpec("conv3", 384, 3, 1, 1, 1, False, False),
        ConvSpec("conv4", 384, 3, 1, 1, 2, False, False),
        ConvSpec("conv5", 256, 3, 1, 1, 2, True, False),
    ),
    "torchvision": (
        ConvSpec("conv1", 64, 11, 4, 2, 1, True, False),
        ConvSpec("conv2", 192, 5, 1, 2, 1, True, False),
        ConvSpec("conv3", 384, 3, 1, 1, 1, False, False),
        ConvSpec("conv4", 256, 3, 1, 1, 1, False, False),
        ConvSpec("conv5", 256, 3, 1, 1, 1, True, False),
    ),
}
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc6", "fc7", "predictions")
FC_UNITS = 4096  # width of fc6 and fc7
POOL5_SHAPE = (6, 6, 256)
# The layers an embedding can come from: pool5 (then globally pooled, see extractor.network.poolings), fc6, fc7.
LAYERS = ("pool5", "fc6", "fc7")
TTAS = ("none", "flip")  # test-time augmentation: none, or the mean of the image's and its mirror's vectors


def check_arch(arch: str) -> str:
    """Return ``arch`` if it is a known architecture, else raise a WeightsError naming the choices."""
    if arch not in ARCHS:
        raise WeightsError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHS)}")
    return arch


def flops_per_image(arch: str) -> float:
    """Floating-point operations (2 x multiply-adds) of conv1-conv5 for one image at the native input size."""
    size = INPUT_SIZE[check_arch(arch)]
    channels, total = 3, 0.0
    for spec in CONVS[arch]:
        size = (size + 2 * spec.pad - spec.kernel) // spec.stride + 1
        total += 2.0 * size * size * spec.filters * spec.kernel * spec.kernel * channels / spec.groups
        channels = spec.filters
        if spec.pool:
            size = (size - 3) // 2 + 1
    return total
