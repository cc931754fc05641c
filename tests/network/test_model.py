"""The network: parity with reference outputs, the keras.applications contract, serialisation."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from extractor.errors import AlexfeatError, WeightsError
from extractor.network.model import AlexNet, preprocess_input
from extractor.network.poolings import POOLINGS


def assert_close(actual: np.ndarray, golden: np.ndarray) -> None:
    """Max abs difference within 1e-4 of the largest golden value (float32 on CPU)."""
    assert actual.shape == golden.shape
    assert np.abs(actual - golden).max() <= 1e-4 * np.abs(golden).max()


@pytest.fixture(scope="module")
def torch_golden(fixtures_dir):
    with np.load(fixtures_dir / "torchvision_alexnet_golden.npz") as npz:
        return dict(npz)


@pytest.mark.parametrize("checkpoint", ["torchvision_alexnet_features_zip.pth", "torchvision_alexnet_full_legacy.pth"])
def test_torchvision_checkpoints_match_torch_outputs(fixtures_dir, torch_golden, checkpoint):
    x = preprocess_input(torch_golden["input_rgb01_nhwc"] * 255.0, "torchvision")
    maps = AlexNet(weights=str(fixtures_dir / checkpoint), pooling=None)
    assert maps.output_shape == (None, 6, 6, 256)
    assert_close(maps.predict(x, verbose=0), torch_golden["pool5_nhwc"])
    gap = AlexNet(weights=str(fixtures_dir / checkpoint), pooling="avg")
    assert_close(gap.predict(x, verbose=0), torch_golden["pool5_gap"])


def test_torchvision_classifier_matches_torch_logits(fixtures_dir, torch_golden):
    x = preprocess_input(torch_golden["input_rgb01_nhwc"] * 255.0, "torchvision")
    model = AlexNet(
        weights=str(fixtures_dir / "torchvision_alexnet_full_legacy.pth"), include_top=True, classifier_activation=None
    )
    assert model.output_shape == (None, 1000)
    assert_close(model.predict(x, verbose=0), torch_golden["logits"])


def test_caffe_weights_match_reference_forward_pass(fixtures_dir, caffe_weights):
    with np.load(fixtures_dir / "caffe_alexnet_golden.npz") as npz:
        golden = dict(npz)
    maps = AlexNet(weights=str(caffe_weights), pooling=None)
    assert maps.input_shape == (None, 227, 227, 3)
    assert_close(maps.predict(golden["input_nhwc"], verbose=0), golden["pool5_nhwc"])
    gap = AlexNet(arch="caffe", weights=str(caffe_weights), pooling="avg")
    assert_close(gap.predict(golden["input_nhwc"], verbose=0), golden["pool5_gap"])


def test_preprocess_input_follows_each_training_recipe():
    rgb = np.full((1, 2, 2, 3), 255.0, np.float32)
    caffe = preprocess_input(rgb, "caffe")
    np.testing.assert_allclose(caffe[0, 0, 0], 255.0 - np.array([122.226, 116.209, 103.565]), rtol=1e-6)
    torch = preprocess_input(rgb, "torchvision")
    expected = (1.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(torch[0, 0, 0], expected, rtol=1e-5)
    with pytest.raises(WeightsError, match="unknown architecture"):
        preprocess_input(rgb, "vgg")


def test_preprocess_input_refuses_what_cannot_be_rgb_0_255_and_reads_the_arch_from_a_model():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.float32)
    for wrong, message in (
        (rgb / 255.0, r"0\.\.1\?\): multiply them by 255"),
        (preprocess_input(rgb, "caffe"), "not already preprocessed"),
        (rgb[..., :1], "3 channels last"),
        (np.transpose(rgb, (0, 3, 1, 2)), "3 channels last"),
    ):
        with pytest.raises(AlexfeatError, match=message):
            preprocess_input(wrong, "caffe")
    np.testing.assert_array_equal(preprocess_input(rgb.astype(np.uint8), "caffe"), preprocess_input(rgb, "caffe"))
    np.testing.assert_array_equal(preprocess_input(rgb[0], "caffe"), preprocess_input(rgb, "caffe")[0])
    for arch in ("caffe", "torchvision"):
        model = AlexNet(arch=arch, weights="random")
        np.testing.assert_array_equal(preprocess_input(rgb, model), preprocess_input(rgb, arch))


def test_shapes_poolings_and_arch_defaults():
    model = AlexNet(weights="random")  # random alone means torchvision
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 256)
    for name, pooling in POOLINGS.items():  # every pooling that embed offers, by name
        assert AlexNet(arch="caffe", weights="random", pooling=name).output_shape == (None, pooling.dim)
    assert AlexNet(arch="caffe", weights="random", pooling=None).output_shape == (None, 6, 6, 256)
    assert AlexNet(weights="random", include_top=True, classes=7).output_shape == (None, 7)
    bigger = AlexNet(weights="random", pooling=None, input_shape=(320, 320, 3))
    assert bigger.output_shape == (None, 9, 9, 256)
    with pytest.raises(ValueError, match="pooling must be None or one of avg, max, gem, rmac, flatten, got 'sum'"):
        AlexNet(weights="random", pooling="sum")


def test_random_weights_are_seeded():
    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
    first = AlexNet(weights="random").predict(x, verbose=0)
    second = AlexNet(weights="random").predict(x, verbose=0)
    np.testing.assert_array_equal(first, second)
    assert np.abs(first).max() > 0


def test_wrong_architecture_request_is_a_clear_error(caffe_weights):
    with pytest.raises(WeightsError, match="are for the 'caffe' architecture, not 'torchvision'"):
        AlexNet(arch="torchvision", weights=str(caffe_weights))


def test_top_without_fc_weights_is_a_clear_error(caffe_weights):
    with pytest.raises(WeightsError, match="no fc6/fc7/fc8"):
        AlexNet(weights=str(caffe_weights), include_top=True)


def test_saved_model_loads_in_a_fresh_process(tmp_path):
    model = AlexNet(arch="caffe", weights="random", pooling="avg")
    path = tmp_path / "alexnet.keras"
    model.save(path)
    x = np.random.default_rng(1).normal(size=(2, 227, 227, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", model.predict(x, verbose=0))
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import extractor.network.model  # registers the custom layers
        model = keras.models.load_model({str(path)!r})
        out = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        np.testing.assert_allclose(out, np.load({str(tmp_path / "expected.npy")!r}), atol=1e-5)
        assert any(type(l).__name__ == "LocalResponseNormalization" for l in model.layers)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_a_model_saved_by_alexfeat_0_1_0_loads(tmp_path):
    """Preprocess -> ReLU -> LRN -> GeM on 8 x 8 uint8 images, saved when the custom layers lived in
    extractor.network.model (data/custom_layers_0.1.0.*): Keras finds them by their registered names."""
    import keras

    data = Path(__file__).parent / "data"
    model = keras.models.load_model(data / "custom_layers_0.1.0.keras")
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(model.predict(images, verbose=0), np.load(data / "custom_layers_0.1.0.npy"))
    assert [type(layer).__name__ for layer in model.layers[1:]] == [
        "Preprocess",
        "ReLU",
        "LocalResponseNormalization",
        "GeneralizedMeanPooling",
    ]
