"""The model an ``embed`` run uses: the one an existing dataset recorded, or the one asked for (a new dataset).

A rerun into a dataset needs no model options: left out, each is taken from the dataset's metadata, and the
recorded weights are found as search by image finds them (:meth:`FeatureExtractor.from_metadata`: the recorded
path, or ``imagenet`` in the Keras cache, checked by sha256). An option that differs from the recording is refused
with the reason, since two models' embeddings cannot be mixed; ``overwrite`` starts afresh with what is asked.
"""

from __future__ import annotations

import os

from extractor.errors import DatasetError, WeightsError
from extractor.images.decode import ResizeSpec
from extractor.network.archs import LAYERS, TTAS
from extractor.network.features import FeatureExtractor
from extractor.network.poolings import DEFAULT_POOLING
from extractor.network.weights import ENV_VAR, default_source, resolve_weights
from extractor.store import EmbeddingMeta, list_parts, read_meta

DEFAULT_LAYER = LAYERS[0]


def extractor_for(
    out_dir: str | os.PathLike[str],
    weights: str | None = None,
    arch: str | None = None,
    layer: str | None = None,
    pooling: str | None = None,
    resize: str | None = None,
    tta: str | None = None,
    overwrite: bool = False,
) -> FeatureExtractor:
    """The extractor for embedding into ``out_dir``: the dataset's recorded model when it holds embeddings (and
    ``overwrite`` is not set), else the one the options ask for (``None``: the defaults, ``$ALEXFEAT_WEIGHTS`` or
    ``imagenet`` for the weights)."""
    meta = None if overwrite or not list_parts(out_dir) else read_meta(out_dir)
    if meta is None:
        return FeatureExtractor(
            weights or default_source(),
            arch,
            layer or DEFAULT_LAYER,
            pooling or DEFAULT_POOLING,
            resize,
            tta or TTAS[0],
        )
    _refuse_other_settings(out_dir, meta, weights, arch, layer, pooling, resize, tta)
    if weights is not None:
        return FeatureExtractor.from_metadata(meta, weights)
    try:
        return FeatureExtractor.from_metadata(meta)
    except WeightsError:
        fallback = os.environ.get(ENV_VAR)
        if not fallback:
            raise
        return FeatureExtractor.from_metadata(meta, fallback)


def _refuse_other_settings(
    out_dir: str | os.PathLike[str],
    meta: EmbeddingMeta,
    weights: str | None,
    arch: str | None,
    layer: str | None,
    pooling: str | None,
    resize: str | None,
    tta: str | None = None,
) -> None:
    """DatasetError naming each option that asks for another model than the one ``meta`` records."""
    differ = []
    if weights is not None:
        found = resolve_weights(weights, arch or meta.arch)
        if found.sha256 != meta.weights_sha256:
            differ.append(
                f"--weights {weights} (sha256 {found.sha256[:12]}...) are not the weights it was embedded with "
                f"({meta.weights_source}, sha256 {meta.weights_sha256[:12]}...)"
            )
    if resize is not None:
        resize = str(ResizeSpec.parse(resize))
    asked = {"arch": arch, "layer": layer, "resize": resize, "tta": tta}
    if (layer or meta.layer) == DEFAULT_LAYER:  # fc layers record no pooling
        asked["pooling"] = pooling
    for name, value in asked.items():
        recorded = getattr(meta, name)
        if value is not None and value != recorded:
            differ.append(f"--{name} {value} (it was embedded with {name} {recorded})")
    if differ:
        raise DatasetError(
            f"{out_dir} already holds embeddings of another model: {'; '.join(differ)}. Two models' embeddings "
            "cannot be mixed: leave the option out to add to it with its own model (a rerun needs none), use "
            "--overwrite to embed everything again with the new one, or choose another output directory"
        )
