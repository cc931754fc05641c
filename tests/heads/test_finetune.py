"""``alexfeat finetune``: the last conv layers and the head train end to end on an image folder; the output works
with predict and export like a head directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from extractor.cli import main
from extractor.errors import AlexfeatError
from extractor.heads.finetune import FinetuneConfig, training_resize, unfreeze_layers
from extractor.images.decode import ResizeSpec, decode_image
from extractor.network.archs import CONV_LAYERS
from tests.headdata import class_image, embed_tree, make_class_tree
from tests.imagefiles import make_corrupt_png


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def conv_kernels(model) -> dict[str, np.ndarray]:
    """conv1-conv5 kernels of an end-to-end model, found by name at any depth."""
    import keras

    found = {}

    def walk(layer) -> None:
        if isinstance(layer, keras.Model):
            for sub in layer.layers:
                walk(sub)
        elif layer.name in CONV_LAYERS:
            found[layer.name] = layer.get_weights()[0]

    walk(model)
    return found


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> dict[str, Path]:
    """A head trained briefly on 3 x 8 images, then fine-tuned on the same folder (with one broken file)."""
    root = tmp_path_factory.mktemp("finetune")
    make_class_tree(root / "images", 8)
    embed_tree(root / "images", root / "emb")
    code, _, err = run("train", root / "emb", "-o", root / "head", "--head", "linear", "--epochs", "3", "--no-progress")
    assert code == 0, err
    make_corrupt_png(root / "images" / "discs" / "broken.png")
    code, out, err = run(
        "finetune",
        root / "images",
        "-o",
        root / "tuned",
        "--from",
        root / "head",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--lr",
        "1e-4",
        "--no-progress",
    )
    assert code == 0, err
    return {
        "root": root,
        "images": root / "images",
        "head": root / "head",
        "tuned": root / "tuned",
        "out": out,
        "err": err,
    }


def test_finetune_writes_a_model_directory_and_reports_before_and_after(tuned):
    out = tuned["tuned"]
    assert sorted(p.name for p in out.iterdir()) == ["classes.json", "metrics.json", "model.keras"]
    head_metrics = json.loads((tuned["head"] / "metrics.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "classes.json").read_text()) == ["Stripes", "checks", "discs"]
    assert metrics["unfrozen_layers"] == ["conv3", "conv4", "conv5"]
    assert metrics["train_count"] == 18 and metrics["val_count"] == 6
    assert metrics["decode_errors"] == 1 and "discs/broken.png" in next(iter(metrics["decode_error_examples"]))
    assert "1 files could not be decoded" in tuned["err"]
    # Same images, same seed: the same validation split as training, so "before" is the head's own figure.
    assert metrics["val_accuracy_before"] == pytest.approx(head_metrics["val_accuracy"])
    assert metrics["val_loss_before"] == pytest.approx(head_metrics["val_loss"], abs=1e-4)
    # The under-trained head (3 epochs) gains from fine-tuning; the kept epoch is the best on validation loss.
    assert metrics["val_loss"] < metrics["val_loss_before"]
    assert metrics["val_accuracy"] >= metrics["val_accuracy_before"]
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 3
    assert len(metrics["history"]["val_loss"]) == metrics["epochs_run"]
    assert metrics["history"]["val_loss"][metrics["best_epoch"] - 1] == pytest.approx(metrics["val_loss"], abs=1e-4)
    assert metrics["embedding_metadata"] == head_metrics["embedding_metadata"]
    assert f"val accuracy {metrics['val_accuracy_before']:.3f} -> {metrics['val_accuracy']:.3f}" in tuned["out"]


def test_only_the_unfrozen_layers_changed(tuned):
    from extractor.heads.classifier_dir import read_classifier_dir

    before = conv_kernels(read_classifier_dir(tuned["head"]).end_to_end())
    tuned_dir = read_classifier_dir(tuned["tuned"])
    after = conv_kernels(tuned_dir.load_model())
    for name in ("conv1", "conv2"):
        np.testing.assert_array_equal(after[name], before[name])
    assert tuned_dir.metrics["best_epoch"] >= 1  # an epoch improved on the start, so its weights were kept
    for name in ("conv3", "conv4", "conv5"):
        assert not np.array_equal(after[name], before[name])


def test_predict_and_export_accept_a_finetuned_directory(tuned, tmp_path):
    import keras

    files = sorted((tuned["images"] / "checks").glob("*.jpg"))[:4]
    code, out, _ = run("predict", tuned["tuned"], *files, "--json", "--top", "3", "--no-progress")
    assert code == 0
    lines = json_lines(out)
    assert [line["path"] for line in lines] == [str(f) for f in files]
    classes = json.loads((tuned["tuned"] / "classes.json").read_text())
    expected = np.array([[{t["label"]: t["probability"] for t in line["top"]}[c] for c in classes] for line in lines])
    code, _, err = run("export", tuned["tuned"], "-o", tmp_path / "tuned.keras")
    assert code == 0, err
    resize = ResizeSpec.parse(json.loads((tmp_path / "tuned.classes.json").read_text())["resize"])
    images = np.stack([decode_image(f, resize).pixels for f in files])
    exported = keras.models.load_model(tmp_path / "tuned.keras").predict(images, verbose=0)
    np.testing.assert_allclose(exported, expected, atol=1e-5)


def test_cached_embeddings_do_not_fit_a_finetuned_model(tuned):
    code, _, err = run("predict", tuned["tuned"], "--embeddings", tuned["root"] / "emb")
    assert code == 1 and "fine-tuned network" in err and "give it images instead" in err


def test_class_folders_the_head_does_not_know_are_refused(tuned, tmp_path):
    make_class_tree(tmp_path / "images", 2, classes=("checks",))
    (tmp_path / "images" / "zigzags").mkdir()
    class_image("checks", 5).save(tmp_path / "images" / "zigzags" / "a.jpg")
    code, _, err = run("finetune", tmp_path / "images", "-o", tmp_path / "out", "--from", tuned["head"])
    assert code == 1 and "class folders the head does not know ('zigzags')" in err
    assert not (tmp_path / "out").exists()


def test_unfreeze_sets_exactly_the_last_conv_layers_and_the_head_trainable(tuned):
    from extractor.heads.classifier_dir import read_classifier_dir

    model = read_classifier_dir(tuned["head"]).end_to_end()
    head_weights = len(model.layers[-1].trainable_weights)  # logits kernel + bias (linear head)
    assert head_weights == 2
    for count in (0, 3, 5):
        names = unfreeze_layers(model, count)
        assert names == sorted(CONV_LAYERS[5 - count :])
        assert len(model.trainable_weights) == head_weights + 2 * count


def test_training_images_are_decoded_wider_for_random_crops():
    assert str(training_resize(ResizeSpec.parse("squash256-center227"))) == "squash256-center256"
    assert str(training_resize(ResizeSpec.parse("shorter256-center224"))) == "shorter256-center256"
    assert str(training_resize(ResizeSpec.parse("squash227"))) == "squash255-center255"


def test_bad_finetune_settings_are_refused():
    with pytest.raises(AlexfeatError, match="--unfreeze"):
        FinetuneConfig(unfreeze=6)
    with pytest.raises(AlexfeatError, match="--lr"):
        FinetuneConfig(learning_rate=0.0)


def test_finetuning_that_only_hurts_keeps_the_starting_model(tuned, tmp_path):
    """A learning rate far too high wrecks the layers; the kept weights are then the head's own."""
    from extractor.heads.classifier_dir import read_classifier_dir

    code, _, err = run(
        "finetune",
        tuned["images"],
        "-o",
        tmp_path / "wrecked",
        "--from",
        tuned["head"],
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--lr",
        "10",
        "--no-progress",
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "wrecked" / "metrics.json").read_text())
    assert metrics["best_epoch"] == 0 and metrics["train_accuracy"] is None
    assert metrics["val_loss"] == pytest.approx(metrics["val_loss_before"], abs=1e-6)
    before = conv_kernels(read_classifier_dir(tuned["head"]).end_to_end())
    after = conv_kernels(read_classifier_dir(tmp_path / "wrecked").load_model())
    for name in CONV_LAYERS:
        np.testing.assert_array_equal(after[name], before[name])


def test_python_predict_on_a_finetuned_directory_warns_that_weights_are_ignored(tuned):
    from extractor import PredictError, Prediction, predict_files

    told: list[str] = []
    results = list(
        predict_files(
            tuned["tuned"], folder=tuned["images"] / "discs", weights="random", progress=False, warn=told.append
        )
    )
    assert told == ["--weights is ignored: a fine-tuned model holds its own weights"]
    assert results and all(isinstance(r, Prediction | PredictError) for r in results)
    assert [r.path for r in results] == sorted(str(p) for p in (tuned["images"] / "discs").iterdir())
