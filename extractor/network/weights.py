"""Resolve a ``weights=`` argument into Keras-layout tensors for :func:`extractor.network.model.AlexNet`.

Sources: ``"imagenet"`` (torchvision's checkpoint, downloaded once into the Keras cache, its sha256 checked
against the prefix in its file name, converted and cached as ``.weights.h5``), a torchvision ``.pth`` (read
without torch), a caffe-layout ``.npz``, a ``.weights.h5`` written by this project, and ``"random"``.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from extractor.errors import WeightsError
from extractor.network.archs import ARCHS, CONV_LAYERS, CONVS, FC_LAYERS, FC_UNITS, POOL5_SHAPE, check_arch
from extractor.util.hashing import file_sha256

if TYPE_CHECKING:
    import keras

IMAGENET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
IMAGENET_FILE = "alexnet-owt-7be5be79.pth"
IMAGENET_SHA256_PREFIX = "7be5be79"
ENV_VAR = "ALEXFEAT_WEIGHTS"
H5_FORMAT = 1
RANDOM = "random"
TORCH_KEYS = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
    "fc6": "classifier.1",
    "fc7": "classifier.4",
    "predictions": "classifier.6",
}
NPZ_KEYS = {
    "conv1": "conv1",
    "conv2": "conv2",
    "conv3": "conv3",
    "conv4": "conv4",
    "conv5": "conv5",
    "fc6": "fc6",
    "fc7": "fc7",
    "predictions": "fc8",
}
CHOICES = (
    "'imagenet' (download), a torchvision .pth, a caffe-layout .npz, an alexfeat .weights.h5, "
    f"or 'random'; set {ENV_VAR} to choose the default"
)


@dataclass
class Weights:
    """Pretrained tensors in Keras layout, keyed by layer name (``conv1`` ... ``fc6``, ``fc7``, ``predictions``)."""

    arch: str
    tensors: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    source: str  # "imagenet", "random" or an absolute path
    sha256: str  # of the source file (not of a converted cache); "random" for random weights

    @property
    def has_fc(self) -> bool:
        return all(name in self.tensors for name in FC_LAYERS)

    @property
    def param_count(self) -> int:
        return int(sum(k.size + b.size for k, b in self.tensors.values()))

    def check_arch(self, requested: str | None) -> str:
        """The architecture to build: ``requested`` if given and it matches these weights, else theirs."""
        if requested is not None and check_arch(requested) != self.arch:
            raise WeightsError(
                f"weights {self.source!r} are for the {self.arch!r} architecture, not {requested!r}: "
                f"drop the architecture option or ask for {self.arch!r}"
            )
        return self.arch

    def load_into(self, model: keras.Model) -> None:
        """Set every layer of ``model`` that these weights cover; a shape mismatch is a WeightsError."""
        for layer in model.layers:
            if layer.name in self.tensors:
                kernel, bias = self.tensors[layer.name]
                expected = [tuple(w.shape) for w in layer.weights]
                if expected != [kernel.shape, bias.shape]:
                    raise WeightsError(
                        f"weights {self.source!r}: layer {layer.name} has shapes "
                        f"{[kernel.shape, bias.shape]}, the model needs {expected}"
                    )
                layer.set_weights([kernel, bias])


def default_source() -> str:
    """The weights the CLI uses when none are given: ``$ALEXFEAT_WEIGHTS`` or ``"imagenet"``."""
    return os.environ.get(ENV_VAR) or "imagenet"


def resolve_weights(source: str | os.PathLike[str], arch: str | None = None) -> Weights:
    """Turn a weights source into :class:`Weights`; ``arch`` is only used (and checked) for ``"random"``."""
    text = os.fspath(source)
    if text == RANDOM:
        return Weights(check_arch(arch or "torchvision"), {}, RANDOM, RANDOM)
    if text == "imagenet":
        return _imagenet()
    path = Path(text).expanduser()
    if not path.exists():
        raise WeightsError(f"weights {text!r}: no such file; expected {CHOICES}")
    stat = path.stat()
    return _load_file(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_file(path: str, size: int, mtime_ns: int) -> Weights:
    """Read a weights file (memoised on path, size and mtime)."""
    name = path.lower()
    if name.endswith(".npz"):
        return _from_npz(path)
    if name.endswith(".h5"):
        return read_h5(path)
    if name.endswith((".pth", ".pt", ".bin", ".ckpt")):
        return from_torch(path, source=path, sha256=file_sha256(path).hex())
    raise WeightsError(f"weights {path!r}: unknown file type; expected {CHOICES}")


def _conv_shape(arch: str, name: str) -> tuple[int, ...]:
    """Keras kernel shape (kh, kw, in/groups, out) of conv ``name``."""
    specs = CONVS[arch]
    index = CONV_LAYERS.index(name)
    spec, channels = specs[index], 3 if index == 0 else specs[index - 1].filters
    return (spec.kernel, spec.kernel, channels // spec.groups, spec.filters)


def _expected_shapes(arch: str, classes: int = 1000) -> dict[str, tuple[int, ...]]:
    shapes = {name: _conv_shape(arch, name) for name in CONV_LAYERS}
    shapes.update(fc6=(int(np.prod(POOL5_SHAPE)), FC_UNITS), fc7=(FC_UNITS, FC_UNITS), predictions=(FC_UNITS, classes))
    return shapes


def _arch_from_conv1(out_channels: int, where: str) -> str:
    for arch in ARCHS:
        if CONVS[arch][0].filters == out_channels:
            return arch
    raise WeightsError(
        f"{where}: conv1 has {out_channels} filters, which matches no AlexNet architecture "
        f"({', '.join(f'{a}: {CONVS[a][0].filters}' for a in ARCHS)})"
    )


def _fc6_from_chw(weight: np.ndarray) -> np.ndarray:
    """Torch/Caffe fc6 (4096, C*H*W) → Keras kernel (H*W*C, 4096), so Keras's (H, W, C) flatten is exact."""
    h, w, c = POOL5_SHAPE
    return weight.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)


def _convert(raw: dict[str, np.ndarray], keys: dict[str, str], sep: str, where: str) -> tuple[str, dict]:
    """OIHW conv / (out, in) dense tensors named ``keys[layer] + sep + weight|bias`` → Keras layout, checked."""
    first = f"{keys['conv1']}{sep}weight"
    if first not in raw:
        raise WeightsError(f"{where}: no {first!r} tensor: not AlexNet weights in the expected layout")
    arch = _arch_from_conv1(raw[first].shape[0], where)
    expected = _expected_shapes(arch)
    has_fc = any(f"{keys[name]}{sep}weight" in raw for name in FC_LAYERS)
    wanted = CONV_LAYERS + (FC_LAYERS if has_fc else ())
    missing = [
        f"{keys[n]}{sep}{part}" for n in wanted for part in ("weight", "bias") if f"{keys[n]}{sep}{part}" not in raw
    ]
    if missing:
        raise WeightsError(
            f"{where}: missing {', '.join(missing)}; an AlexNet ({arch}) file needs conv1-conv5"
            " (and fc6-fc8 for the classifier)"
        )
    tensors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in wanted:
        weight = np.asarray(raw[f"{keys[name]}{sep}weight"], np.float32)
        bias = np.asarray(raw[f"{keys[name]}{sep}bias"], np.float32)
        if name in CONV_LAYERS:
            kernel = weight.transpose(2, 3, 1, 0) if weight.ndim == 4 else weight
        elif name == "fc6":
            kernel = _fc6_from_chw(weight) if weight.shape == expected["fc6"][::-1] else weight
        else:
            kernel = weight.T
        want = expected[name] if name != "predictions" else (FC_UNITS, kernel.shape[-1])
        if kernel.shape != want or bias.shape != (want[-1],):
            raise WeightsError(
                f"{where}: {keys[name]} has shape {weight.shape}, which does not fit the "
                f"{arch} AlexNet (Keras kernel {want})"
            )
        tensors[name] = (np.ascontiguousarray(kernel), bias)
    return arch, tensors


def from_torch(path: str, source: str, sha256: str) -> Weights:
    """Weights from a torchvision AlexNet state dict (``features.*``, optionally ``classifier.*``)."""
    from extractor.network.torch_checkpoint import load_state_dict

    raw = load_state_dict(path)
    arch, tensors = _convert(raw, TORCH_KEYS, ".", path)
    return Weights(arch, tensors, source, sha256)


def _from_npz(path: str) -> Weights:
    """Weights from a caffe-layout ``.npz`` (``conv1_weight`` OIHW, ..., optional ``fc6_weight`` ...)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {key: npz[key] for key in npz.files}
    except Exception as exc:  # zipfile/ValueError/OSError on damaged files
        raise WeightsError(
            f"{path}: cannot read .npz ({type(exc).__name__}: {exc}); the file may be truncated"
        ) from None
    arch, tensors = _convert(raw, NPZ_KEYS, "_", path)
    return Weights(arch, tensors, path, file_sha256(path).hex())


def write_h5(weights: Weights, target: str | os.PathLike[str]) -> None:
    """Save weights as an alexfeat ``.weights.h5`` (atomically), keeping the source's name and sha256."""
    import h5py

    from extractor.util.atomic import atomic_path

    with atomic_path(target) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["alexfeat"] = json.dumps(
                {"format": H5_FORMAT, "arch": weights.arch, "source": weights.source, "source_sha256": weights.sha256}
            )
            for name, (kernel, bias) in weights.tensors.items():
                group = h5.create_group(name)
                group.create_dataset("kernel", data=kernel)
                group.create_dataset("bias", data=bias)


def convert_weights(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Weights:
    """Convert ``source`` (anything ``resolve_weights`` takes that holds tensors) to the ``.weights.h5`` file
    ``target``; returns the converted weights (``alexfeat weights convert``)."""
    if not os.fspath(target).endswith(".weights.h5"):
        raise WeightsError(f"output {os.fspath(target)!r} must end in .weights.h5")
    resolved = resolve_weights(source)
    if not resolved.tensors:
        raise WeightsError(f"{os.fspath(source)!r} has no tensors to convert")
    write_h5(resolved, target)
    return resolved


def read_h5(path: str | Path) -> Weights:
    """Read an alexfeat ``.weights.h5``; its sha256 is the one of the file it was converted from."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            if "alexfeat" not in h5.attrs:
                raise WeightsError(
                    f"{path}: not an alexfeat weights file (no 'alexfeat' attribute); convert "
                    "weights with `alexfeat weights convert`"
                )
            info = json.loads(h5.attrs["alexfeat"])
            tensors = {name: (h5[name]["kernel"][()], h5[name]["bias"][()]) for name in h5.keys()}
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read weights file ({type(exc).__name__}: {exc})") from None
    missing = [name for name in CONV_LAYERS if name not in tensors]
    if missing:
        raise WeightsError(f"{path}: missing layers {', '.join(missing)}")
    fields = info if isinstance(info, dict) else {}
    arch, sha256, source = fields.get("arch"), fields.get("source_sha256"), fields.get("source", str(path))
    if arch not in ARCHS or not isinstance(sha256, str) or not isinstance(source, str):
        raise WeightsError(
            f"{path}: its 'alexfeat' attribute lacks a valid arch ({', '.join(ARCHS)}) and source_sha256, so it was "
            "not written by alexfeat or was edited; convert the original weights again with `alexfeat weights convert`"
        )
    return Weights(arch, tensors, source if source in ("imagenet",) else str(path), sha256)


def _imagenet() -> Weights:
    """torchvision's ImageNet checkpoint: converted cache if present, else download, check and convert."""
    cache_dir = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    cached = cache_dir / IMAGENET_FILE.replace(".pth", ".weights.h5")
    if cached.exists():  # read without TensorFlow: an up-to-date rerun never loads it
        weights = read_h5(cached)
        return Weights(weights.arch, weights.tensors, "imagenet", weights.sha256)
    keras = _keras()
    try:
        pth = keras.utils.get_file(IMAGENET_FILE, IMAGENET_URL, cache_subdir="models")
    except Exception as exc:
        raise WeightsError(
            f"could not download the ImageNet weights from {IMAGENET_URL} ({type(exc).__name__}: {exc}). "
            f"Without internet, pass a local file with --weights PATH or set {ENV_VAR}=PATH; accepted: a "
            f"torchvision .pth (e.g. {IMAGENET_FILE} copied from a machine with internet), a caffe-layout .npz, "
            f"an alexfeat .weights.h5 (or --weights random, for trials only)."
        ) from None
    digest = file_sha256(pth).hex()
    if not digest.startswith(IMAGENET_SHA256_PREFIX):
        Path(pth).unlink(missing_ok=True)
        raise WeightsError(
            f"downloaded {IMAGENET_FILE} has sha256 {digest[:16]}..., which does not start with "
            f"{IMAGENET_SHA256_PREFIX} as its name promises; the file was removed, try again"
        )
    weights = from_torch(pth, source="imagenet", sha256=digest)
    write_h5(weights, cached)
    return weights


def _keras() -> Any:
    """Keras, imported quietly (TensorFlow's start-up lines would otherwise come before a download error)."""
    from extractor.network.tf_runtime import import_tensorflow

    import_tensorflow()
    import keras

    return keras
