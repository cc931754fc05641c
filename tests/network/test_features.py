"""FeatureExtractor: AlexNet + preprocessing + L2 normalisation, its poolings from the one table, and its
settings (an EmbeddingMeta) rebuilding the same function."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from extractor.errors import AlexfeatError, DatasetError, WeightsError
from extractor.network.archs import ARCHS, DEFAULT_RESIZE, LAYERS, TTAS
from extractor.network.features import FeatureExtractor
from extractor.network.model import AlexNet, preprocess_input
from extractor.network.poolings import DEFAULT_POOLING, POOLINGS, Pooling


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# R-MAC's squares on AlexNet's 13 x 13 conv5 maps, (top, left, side), listed by hand: the whole map, 2 x 2 of side
# 8 and 3 x 3 of side 6, spread from edge to edge.
RMAC_13 = (
    [(0, 0, 13)]
    + [(t, left, 8) for t in (0, 5) for left in (0, 5)]
    + [(t, left, 6) for t in (0, 4, 7) for left in (0, 4, 7)]
)


def rmac(conv5: np.ndarray) -> np.ndarray:
    return sum(unit(conv5[:, t : t + side, left : left + side].max(axis=(1, 2))) for t, left, side in RMAC_13)


# What each pooling computes on (N, H, W, C) maps (pool5, or conv5 before its max-pool), independently of the model.
REFERENCE = {
    "avg": ("pool5", lambda maps: maps.mean(axis=(1, 2))),
    "max": ("pool5", lambda maps: maps.max(axis=(1, 2))),
    "gem": ("pool5", lambda maps: np.mean(np.maximum(maps, 1e-6) ** 3, axis=(1, 2)) ** (1 / 3)),
    "rmac": ("conv5", rmac),
    "flatten": ("pool5", lambda maps: maps.reshape(len(maps), -1)),
}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (2, 227, 227, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def caffe_maps(images: np.ndarray) -> dict[str, np.ndarray]:
    """conv5 (before its max-pool) and pool5 maps of the seeded random caffe network."""
    import keras

    base = AlexNet(arch="caffe", weights="random", pooling=None)
    both = keras.Model(base.input, [base.get_layer("conv5").output, base.output])
    conv5, pool5 = both.predict(preprocess_input(images, "caffe"), verbose=0)
    return {"conv5": conv5, "pool5": pool5}


@pytest.mark.parametrize("name", list(POOLINGS))
def test_every_pooling_in_the_table_is_what_it_says_on_the_pool5_maps(name, images, caffe_maps):
    extractor = FeatureExtractor("random", "caffe", "pool5", name)
    vectors = extractor(images)
    assert vectors.shape == (2, POOLINGS[name].dim) and extractor.spec.dim == POOLINGS[name].dim
    assert extractor.spec.pooling == name
    source, reference = REFERENCE[name]
    np.testing.assert_allclose(vectors, unit(reference(caffe_maps[source])), atol=2e-5)


def test_rmac_regions_are_three_scales_of_squares_covering_the_map():
    from extractor.network.layers import rmac_regions

    assert rmac_regions(13, 13) == RMAC_13
    wide = rmac_regions(13, 20)  # a longer side gets extra squares, still inside the map and covering it
    covered = np.zeros((13, 20), bool)
    for top, left, side in wide:
        assert top + side <= 13 and left + side <= 20
        covered[top : top + side, left : left + side] = True
    assert covered.all() and len(wide) > len(RMAC_13)


def test_tta_flip_is_the_mean_of_the_image_and_its_mirror(images):
    plain = FeatureExtractor("random", "caffe", "pool5", "rmac")
    flip = FeatureExtractor("random", "caffe", "pool5", "rmac", tta="flip")
    assert (flip.spec.tta, plain.spec.tta) == ("flip", "none") and flip.spec.differences(plain.spec) == [
        "tta: flip != none"
    ]
    mirrored = images[:, :, ::-1]
    np.testing.assert_allclose(flip(images), unit(plain(images) + plain(mirrored)), atol=2e-5)
    np.testing.assert_allclose(flip(images), flip(mirrored), atol=2e-5)  # a mirrored photo gives the same vector
    assert FeatureExtractor.from_metadata(flip.spec).spec.tta == "flip"
    with pytest.raises(AlexfeatError, match="unknown test-time augmentation 'rotate': choose one of none, flip"):
        FeatureExtractor("random", tta="rotate")


def test_a_new_pooling_is_one_entry_and_may_use_conv5_before_its_max_pool(monkeypatch, images, caffe_maps):
    def conv5_max(base):
        import keras

        return keras.layers.GlobalMaxPooling2D(name="conv5_max")(base.get_layer("conv5").output)

    monkeypatch.setitem(POOLINGS, "conv5max", Pooling(conv5_max, 256, "max of conv5"))
    assert AlexNet(arch="caffe", weights="random", pooling="conv5max").output_shape == (None, 256)
    extractor = FeatureExtractor("random", "caffe", "pool5", "conv5max")
    assert extractor.spec.pooling == "conv5max"
    np.testing.assert_allclose(extractor(images), unit(caffe_maps["conv5"].max(axis=(1, 2))), atol=2e-5)


def test_unknown_layer_or_pooling_names_the_choices():
    with pytest.raises(AlexfeatError, match="unknown pooling 'sum': choose one of avg, max, gem, rmac, flatten"):
        FeatureExtractor("random", pooling="sum")
    with pytest.raises(AlexfeatError, match="unknown layer 'fc8': choose one of pool5, fc6, fc7"):
        FeatureExtractor("random", layer="fc8")


def test_spec_records_the_settings_and_fc_layers_record_no_pooling():
    spec = FeatureExtractor("random", "torchvision", "fc7", "max").spec
    assert (spec.arch, spec.layer, spec.pooling, spec.dim, spec.input_size) == ("torchvision", "fc7", "none", 4096, 224)
    assert spec.resize == DEFAULT_RESIZE["torchvision"] and spec.root is None
    assert FeatureExtractor("random").spec.pooling == DEFAULT_POOLING


def test_from_metadata_rebuilds_the_same_function_and_refuses_what_does_not_fit(tmp_path):
    made = FeatureExtractor("random", "torchvision", "pool5", "max", resize="squash224")
    images = np.random.default_rng(4).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    rebuilt = FeatureExtractor.from_metadata(made.spec)
    assert rebuilt.spec == made.spec
    np.testing.assert_array_equal(rebuilt(images), made(images))
    with pytest.raises(WeightsError, match="are not the ones the embeddings were made with"):
        FeatureExtractor.from_metadata(replace(made.spec, weights_sha256="0" * 64))
    with pytest.raises(WeightsError, match="pass --weights with that file"):
        FeatureExtractor.from_metadata(replace(made.spec, weights_source=str(tmp_path / "gone.weights.h5")))
    with pytest.raises(DatasetError, match=r"rebuilt extractor differs .*: dim: 99 != 256"):
        FeatureExtractor.from_metadata(replace(made.spec, dim=99))


def test_the_cli_choices_are_the_tables():
    from extractor.cli.embed import embed

    choices = {p.name: list(p.type.choices) for p in embed.params if hasattr(p.type, "choices")}
    assert choices == {
        "arch": list(ARCHS),
        "layer": list(LAYERS),
        "pooling": list(POOLINGS),
        "tta": list(TTAS),
        "engine": ["local", "ray"],
    }
