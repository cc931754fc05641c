"""FeatureExtractor: AlexNet + preprocessing + L2 normalisation, its poolings from the one table, and its
settings (an EmbeddingMeta) rebuilding the same function."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from extractor.errors import AlexfeatError, DatasetError, WeightsError
from extractor.network.archs import ARCHS, DEFAULT_RESIZE, LAYERS
from extractor.network.features import FeatureExtractor
from extractor.network.model import AlexNet, preprocess_input
from extractor.network.poolings import DEFAULT_POOLING, POOLINGS, Pooling

# What each pooling computes on (N, H, W, C) maps, written independently of the model.
REFERENCE = {
    "avg": lambda maps: maps.mean(axis=(1, 2)),
    "max": lambda maps: maps.max(axis=(1, 2)),
    "gem": lambda maps: np.mean(np.maximum(maps, 1e-6) ** 3, axis=(1, 2)) ** (1 / 3),
    "flatten": lambda maps: maps.reshape(len(maps), -1),
}


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


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
    np.testing.assert_allclose(vectors, unit(REFERENCE[name](caffe_maps["pool5"])), atol=2e-5)


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
    with pytest.raises(AlexfeatError, match="unknown pooling 'sum': choose one of avg, max, gem, flatten"):
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

    model_options = ("arch", "layer", "pooling")  # (--engine has choices too: not the model's)
    choices = {p.name: list(p.type.choices) for p in embed.params if p.name in model_options}
    assert choices == {"arch": list(ARCHS), "layer": list(LAYERS), "pooling": list(POOLINGS)}
