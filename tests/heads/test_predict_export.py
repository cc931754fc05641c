"""``alexfeat predict`` and ``alexfeat export`` on a head trained in the test: raw images in, the same answers as
the head on the stored embeddings, and exported models that agree with ``predict`` in a fresh process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from extractor.cli import main
from extractor.images.decode import ResizeSpec, decode_image
from extractor.store import load_dataset
from tests.format1 import format1_record
from tests.headdata import embed_tree, make_class_tree
from tests.imagefiles import make_corrupt_png, make_text_file

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[int, str, str]:
    """Run ``alexfeat ARGS``; returns the exit code, stdout and stderr."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    make_class_tree(root / "images", 8)
    held = make_class_tree(root / "held", 4, first_seed=700)
    embed_tree(root / "images", root / "emb")
    code, _, err = run("train", root / "emb", "-o", root / "head", "--head", "mlp", "--no-progress")
    assert code == 0, err
    return {
        "root": root,
        "images": root / "images",
        "emb": root / "emb",
        "head": root / "head",
        "held": [root / "held" / p for p in held],
    }


def test_predict_json_lines_for_good_and_bad_files(trained, tmp_path):
    bad = [make_corrupt_png(tmp_path / "broken.png"), make_text_file(tmp_path / "notes.jpg"), tmp_path / "gone.jpg"]
    inputs = [*trained["held"][:6], *bad, *trained["held"][6:]]
    code, out, err = run("predict", trained["head"], *inputs, "--json", "--top", "2", "--no-progress")
    assert code == 0
    lines = json_lines(out)
    assert [line["path"] for line in lines] == [str(p) for p in inputs]  # one line per input, in order
    errors = {line["path"]: line["error"] for line in lines if "error" in line}
    assert errors == {str(bad[0]): "corrupt", str(bad[1]): "not_an_image", str(bad[2]): "unreadable"}
    good = [line for line in lines if "error" not in line]
    for line in good:
        assert set(line) == {"path", "label", "probability", "top"} and len(line["top"]) == 2
        assert line["top"][0] == {"label": line["label"], "probability": line["probability"]}
        assert line["top"][0]["probability"] >= line["top"][1]["probability"]
    truth = [Path(line["path"]).parent.name for line in good]
    assert np.mean([line["label"] == t for line, t in zip(good, truth)]) >= 0.9  # unseen images, chance 1/3
    assert "classified 12, 3 could not be read" in err


def test_predict_text_output_and_errors_on_stderr(trained, tmp_path):
    make_text_file(tmp_path / "notes.jpg")
    code, out, err = run("predict", trained["head"], trained["held"][0], tmp_path / "notes.jpg", "--no-progress")
    assert code == 0
    fields = out.strip().split("\t")
    assert fields[0] == str(trained["held"][0]) and fields[1] == "Stripes" and len(fields) == 5
    assert 0.0 <= float(fields[2]) <= 1.0
    assert f"{tmp_path / 'notes.jpg'}: not_an_image:" in err
    (tmp_path / "empty").mkdir()
    code, out, err = run("predict", trained["head"], "--dir", tmp_path / "empty", "--no-progress")
    assert code == 0 and not out and err == f"classified 0: found no images under {tmp_path / 'empty'}\n"


def test_predict_on_images_equals_the_head_on_their_stored_embeddings(trained):
    code, out, _ = run("predict", trained["head"], "--dir", trained["images"], "--json", "--top", "3", "--no-progress")
    assert code == 0
    by_image = {os.path.relpath(line["path"], trained["images"]).replace(os.sep, "/"): line for line in json_lines(out)}
    code, out, _ = run("predict", trained["head"], "--embeddings", trained["emb"], "--json", "--top", "3")
    assert code == 0
    by_vector = {line["path"]: line for line in json_lines(out)}
    assert set(by_image) == set(by_vector) and len(by_image) == 24
    for path, line in by_image.items():
        assert line["label"] == by_vector[path]["label"]
        got = [t["probability"] for t in line["top"]]
        want = [t["probability"] for t in by_vector[path]["top"]]
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_predict_in_bfloat16_agrees_with_float32(trained):
    """--precision applies to the head's base: a float32-trained head classifies bfloat16 embeddings alike."""
    probabilities = {}
    for precision in ("float32", "bfloat16"):
        code, out, err = run(
            "predict", trained["head"], *trained["held"], "--json", "--top", "3", "--precision", precision
        )
        assert code == 0, err
        probabilities[precision] = {line["path"]: line["top"] for line in json_lines(out)}
    assert probabilities["float32"].keys() == probabilities["bfloat16"].keys()
    for path, top in probabilities["float32"].items():
        other = {t["label"]: t["probability"] for t in probabilities["bfloat16"][path]}
        assert top[0]["label"] == probabilities["bfloat16"][path][0]["label"]
        np.testing.assert_allclose([t["probability"] for t in top], [other[t["label"]] for t in top], atol=2e-3)
    code, _, err = run("predict", trained["head"], trained["held"][0], "--precision", "half")
    assert code == 2 and "'half' is not one of 'auto', 'float32', 'bfloat16'" in err


def test_embeddings_from_another_model_are_refused(trained, tmp_path):
    embed_tree(trained["images"], tmp_path / "emb_max", pooling="max")
    code, _, err = run("predict", trained["head"], "--embeddings", tmp_path / "emb_max")
    assert code == 1
    assert "was made with another model than the head" in err and "pooling: avg != max" in err


def test_a_head_written_by_format_1_still_predicts(trained, tmp_path):
    old = tmp_path / "old_head"
    shutil.copytree(trained["head"], old)
    metrics = json.loads((old / "metrics.json").read_text())
    meta = load_dataset(trained["emb"], embeddings=False).meta
    (old / "metrics.json").write_text(json.dumps({**metrics, "embedding_metadata": format1_record(meta)}, indent=1))

    def predictions(head: Path) -> tuple[str, str]:
        """What predict says on the stored embeddings, and on an image file (the extractor rebuilt from metadata)."""
        code, stored, err = run("predict", head, "--embeddings", trained["emb"], "--json", "--top", "1")
        assert code == 0, err
        code, image, err = run("predict", head, trained["held"][0], "--json", "--no-progress")
        assert code == 0, err
        return stored, image

    assert predictions(old) == predictions(trained["head"])


EXPORT_CHECK = r"""
import json, sys
import numpy as np
import tensorflow as tf
images = np.load(sys.argv[1])
saved = tf.saved_model.load(sys.argv[3])  # keep a reference: the function needs its variables alive
served = saved.serve(tf.constant(images)).numpy()
assert not any(m.startswith(("extractor", "index")) for m in sys.modules), "SavedModel needed alexfeat"
import keras
import extractor.network.model  # registers the custom layers: the one alexfeat import a .keras file needs
loaded = keras.models.load_model(sys.argv[2]).predict(images, verbose=0)
ours = sorted(m for m in sys.modules if m.startswith(("extractor", "index")))
print(json.dumps({"keras": loaded.tolist(), "savedmodel": served.tolist(), "modules": ours}))
"""


def check_exports_match_predict(head: Path, files: list[Path], tmp_path: Path, input_size: int) -> None:
    """Export ``head`` in both formats; in a fresh process, both give ``alexfeat predict``'s probabilities (in
    float32, as exports run) on the decoded, resized images (within 1e-5), the .keras file needing no alexfeat import
    but extractor.network.model."""
    keras_path, saved_dir = tmp_path / "model.keras", tmp_path / "saved"
    code, out, err = run("export", head, "-o", keras_path)
    assert code == 0, err
    assert f"uint8 RGB images (N, {input_size}, {input_size}, 3)" in out
    assert run("export", head, "-o", saved_dir, "--format", "savedmodel")[0] == 0
    classes = json.loads((head / "classes.json").read_text())
    for classes_file in (tmp_path / "model.classes.json", saved_dir / "classes.json"):
        assert json.loads(classes_file.read_text())["classes"] == classes

    top = str(len(classes))
    code, out, _ = run("predict", head, *files, "--json", "--top", top, "--precision", "float32", "--no-progress")
    expected = np.array(
        [[{t["label"]: t["probability"] for t in line["top"]}[c] for c in classes] for line in json_lines(out)]
    )
    resize = ResizeSpec.parse(json.loads((tmp_path / "model.classes.json").read_text())["resize"])
    np.save(tmp_path / "images.npy", np.stack([decode_image(f, resize).pixels for f in files]))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", EXPORT_CHECK, tmp_path / "images.npy", keras_path, saved_dir],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(result["modules"]) == [
        "extractor",
        "extractor.errors",
        "extractor.network",
        "extractor.network.archs",
        "extractor.network.layers",
        "extractor.network.model",
        "extractor.network.poolings",
        "extractor.util",
        "extractor.util.lazy",
    ]
    np.testing.assert_allclose(result["keras"], expected, atol=1e-5)
    np.testing.assert_allclose(result["savedmodel"], expected, atol=1e-5)


def test_exported_models_equal_predict_in_a_fresh_process(trained, tmp_path):
    check_exports_match_predict(trained["head"], trained["held"], tmp_path, 224)


def test_caffe_head_with_real_weights_exports_like_it_predicts(caffe_weights, trained, tmp_path):
    """The caffe architecture (227 px, squash resize, LRN layers) through train, predict and export."""
    embed_tree(trained["images"], tmp_path / "emb", weights=str(caffe_weights))
    code, _, err = run("train", tmp_path / "emb", "-o", tmp_path / "head", "--head", "linear", "--no-progress")
    assert code == 0, err
    assert json.loads((tmp_path / "head" / "metrics.json").read_text())["val_accuracy"] >= 0.8
    check_exports_match_predict(tmp_path / "head", trained["held"][::2], tmp_path, 227)


def test_export_refuses_a_keras_path_without_the_suffix(trained, tmp_path):
    code, _, err = run("export", trained["head"], "-o", tmp_path / "model.h5")
    assert code == 1 and "must end in .keras" in err and "model.keras" in err
    assert not list(tmp_path.iterdir())


def test_a_directory_that_is_not_a_head_is_a_clear_error(trained, tmp_path):
    code, _, err = run("predict", trained["emb"], trained["held"][0])
    assert code == 1 and "holds neither head.keras nor model.keras" in err
    code, _, err = run("export", tmp_path / "missing", "-o", tmp_path / "m.keras")
    assert code == 1 and "is not a directory" in err


def test_predict_needs_images_or_embeddings(trained):
    code, _, err = run("predict", trained["head"])
    assert code == 2 and "give image files, --dir DIR or --embeddings EMB_DIR" in err
    code, _, err = run("predict", trained["head"], trained["held"][0], "--embeddings", trained["emb"])
    assert code == 2 and "not both" in err


def test_head_classifies_stored_embeddings_like_the_training_metrics_say(trained):
    """The head's val accuracy in metrics.json is what it does on those rows of the dataset."""
    from extractor.heads.classifier_dir import read_classifier_dir
    from extractor.heads.train import encode_labels, stratified_split

    classifier = read_classifier_dir(trained["head"])
    data = load_dataset(trained["emb"])
    _, y, rows = encode_labels(data.labels)
    _, val = stratified_split([data.paths[i] for i in rows], y, 0.2, classifier.metrics["seed"])
    predicted = classifier.load_model()(data.vectors[rows][val]).numpy().argmax(axis=1)
    assert classifier.metrics["val_accuracy"] == pytest.approx(float(np.mean(predicted == y[val])))
