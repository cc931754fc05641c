"""``alexfeat train``: heads on real embeddings of real images; labels, split, metrics and the errors a user hits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from extractor.cli import main
from extractor.errors import AlexfeatError
from extractor.heads.metrics import classification_report
from extractor.heads.train import TrainConfig, encode_labels, stratified_split
from extractor.network.spec import EmbeddingMeta
from extractor.store import load_dataset
from tests.headdata import CLASSES, class_image, embed_tree, make_class_tree


def run(*args: str) -> tuple[int, str]:
    """Run ``alexfeat ARGS``; returns the exit code and stdout + stderr."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Training images (3 classes x 10, plus one file in the root: unlabelled), held-out images, embeddings."""
    root = tmp_path_factory.mktemp("heads")
    make_class_tree(root / "images", 10)
    class_image("discs", 999).save(root / "images" / "loose.jpg")
    make_class_tree(root / "held", 6, first_seed=500)
    embed_tree(root / "images", root / "emb")
    embed_tree(root / "held", root / "held_emb")
    return {"root": root, "images": root / "images", "emb": root / "emb", "held_emb": root / "held_emb"}


def held_out_accuracy(head_dir: Path, held_emb: Path) -> float:
    from extractor.heads.classifier_dir import read_classifier_dir

    classifier = read_classifier_dir(head_dir)
    held = load_dataset(held_emb)
    predicted = classifier.load_model()(held.vectors).numpy().argmax(axis=1)
    return float(np.mean(np.array(classifier.classes)[predicted] == np.array(held.labels)))


@pytest.mark.parametrize("head", ["mlp", "linear"])
def test_train_writes_a_head_that_classifies_new_images(data, tmp_path, head):
    out = tmp_path / "head"
    code, output = run("train", str(data["emb"]), "-o", str(out), "--head", head, "--no-progress")
    assert code == 0, output
    assert f"{head} head, 3 classes, 24 train / 6 val vectors" in output
    assert "1 of 31 rows have no label" in output  # loose.jpg sits in the root: skipped with a warning
    assert sorted(p.name for p in out.iterdir()) == ["classes.json", "head.keras", "metrics.json"]
    assert json.loads((out / "classes.json").read_text()) == ["Stripes", "checks", "discs"]  # code-point order

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["head"] == head and metrics["unlabelled_skipped"] == 1
    assert metrics["train_accuracy"] >= 0.95 and metrics["val_accuracy"] >= 0.8
    assert 0 < metrics["train_seconds"] < 60 and 1 <= metrics["best_epoch"] <= metrics["epochs_run"]
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == metrics["val_count"] == 6
    assert set(metrics["per_class"]) == set(CLASSES)
    assert all(set(v) == {"precision", "recall", "f1", "support"} for v in metrics["per_class"].values())
    assert EmbeddingMeta.from_dict(metrics["embedding_metadata"]) == load_dataset(data["emb"], embeddings=False).meta
    # Stated accuracy on images the head never saw (chance is 1/3).
    assert held_out_accuracy(out, data["held_emb"]) >= 0.9


def test_without_validation_split_trains_exactly_the_given_epochs(data, tmp_path):
    out = tmp_path / "head"
    code, output = run(
        "train",
        str(data["emb"]),
        "-o",
        str(out),
        "--head",
        "linear",
        "--val-fraction",
        "0",
        "--epochs",
        "7",
        "--no-progress",
    )
    assert code == 0, output
    assert "no validation split" in output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == metrics["best_epoch"] == 7
    assert metrics["val_accuracy"] is None and metrics["val_count"] == 0 and metrics["report_split"] == "train"


def test_same_seed_gives_the_same_head_and_retraining_replaces_the_directory(data, tmp_path):
    out = tmp_path / "head"
    for _ in range(2):
        assert (
            run("train", str(data["emb"]), "-o", str(out), "--head", "linear", "--seed", "3", "--no-progress")[0] == 0
        )
        assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging leftovers
    first = json.loads((out / "metrics.json").read_text())
    other = tmp_path / "other"
    assert run("train", str(data["emb"]), "-o", str(other), "--head", "linear", "--seed", "3", "--no-progress")[0] == 0
    second = json.loads((other / "metrics.json").read_text())
    assert first["confusion_matrix"] == second["confusion_matrix"] and first["epochs_run"] == second["epochs_run"]


def test_labels_from_a_csv_file(data, tmp_path):
    dataset = load_dataset(data["emb"], embeddings=False)
    # Relabel: the first 8 of each class as "a-<class>", leave the rest out.
    rows = ["path,label"]
    for label in CLASSES:
        members = sorted(p for p in dataset.paths if p.startswith(label + "/"))[:8]
        rows += [f"{p},a-{label}" for p in members]
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "head"
    code, output = run("train", str(data["emb"]), "-o", str(out), "--labels", str(csv_file), "--no-progress")
    assert code == 0, output
    assert "7 of 31 rows have no label" in output
    assert json.loads((out / "classes.json").read_text()) == [f"a-{c}" for c in CLASSES]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_count"] + metrics["val_count"] == 24 and metrics["labels"] == str(csv_file)


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "path,label\nStripes/img_00000.jpg,x\nnot/there.jpg,y\n",
            "names 1 path(s) that are not in the embeddings: 'not/there.jpg'",
        ),
        ("file,class\nStripes/img_00000.jpg,x\n", "must name the columns path,label"),
        ("path,label\nStripes/img_00000.jpg,x\nStripes/img_00000.jpg,y\n", "labelled both 'x' and 'y'"),
    ],
)
def test_bad_label_files_are_clear_errors(data, tmp_path, content, message):
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(content, encoding="utf-8")
    code, output = run("train", str(data["emb"]), "-o", str(tmp_path / "head"), "--labels", str(csv_file))
    assert code == 1 and message in output and "Traceback" not in output
    assert not (tmp_path / "head").exists()


def test_unknown_label_source_is_a_clear_error(data, tmp_path):
    code, output = run("train", str(data["emb"]), "-o", str(tmp_path / "head"), "--labels", "missing.csv")
    assert code == 1 and "neither a CSV file nor a label column (the file does not exist)" in output


def test_one_class_only_is_a_clear_error(tmp_path):
    make_class_tree(tmp_path / "images", 4, classes=("discs",))
    embed_tree(tmp_path / "images", tmp_path / "emb")
    code, output = run("train", str(tmp_path / "emb"), "-o", str(tmp_path / "head"))
    assert code == 1 and "at least two classes" in output and "only the class 'discs'" in output
    assert "a manifest's label column; a tar shard's .cls member" in output  # where else labels come from


def test_output_that_is_not_a_head_directory_is_refused(data, tmp_path):
    emb_copy = tmp_path / "emb"
    shutil.copytree(data["emb"], emb_copy)
    code, output = run("train", str(emb_copy), "-o", str(emb_copy))
    assert code == 1 and "holds files that are not a classifier's" in output
    assert load_dataset(emb_copy, embeddings=False).ids.size == 31  # untouched


def test_missing_embeddings_directory_is_a_clear_error(tmp_path):
    code, output = run("train", str(tmp_path / "nope"), "-o", str(tmp_path / "head"))
    assert code == 1 and "does not exist" in output


def test_stratified_split_is_per_class_seeded_by_path_and_stable():
    paths = [f"c{i % 3}/img_{i:03d}.jpg" for i in range(60)] + ["c3/only.jpg"]
    y = np.array([i % 3 for i in range(60)] + [3])
    train, val = stratified_split(paths, y, 0.2, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(61))
    assert [int(np.sum(y[val] == c)) for c in range(4)] == [4, 4, 4, 0]  # a one-image class stays in training
    assert np.array_equal(val, stratified_split(paths, y, 0.2, seed=0)[1])
    assert not np.array_equal(val, stratified_split(paths, y, 0.2, seed=1)[1])
    # A path's side of the split does not depend on the other classes' files.
    keep = np.flatnonzero(y != 1)
    _, val_subset = stratified_split([paths[i] for i in keep], y[keep], 0.2, seed=0)
    assert {paths[keep[i]] for i in val_subset} == {paths[i] for i in val if y[i] != 1}


def test_labels_encode_in_code_point_order_and_skip_none():
    classes, y, rows = encode_labels(["b", None, "B", "a", "b"])
    assert classes == ["B", "a", "b"] and y.tolist() == [2, 0, 1, 2] and rows.tolist() == [0, 2, 3, 4]
    with pytest.raises(AlexfeatError, match="no labelled rows"):
        encode_labels([None, None])


def test_bad_training_settings_are_refused():
    with pytest.raises(AlexfeatError, match="unknown head"):
        TrainConfig("svm")
    with pytest.raises(AlexfeatError, match="--val-fraction"):
        TrainConfig(val_fraction=1.0)


def test_classification_report_agrees_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    y_pred[y_pred == 3] = 2  # class 3 is never predicted: precision 0 by convention
    report = classification_report(y_true, y_pred, ["w", "x", "y", "z"])
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2, 3], zero_division=0)
    for i, label in enumerate("wxyz"):
        got = report["per_class"][label]
        assert np.allclose([got["precision"], got["recall"], got["f1"]], [p[i], r[i], f[i]])
        assert got["support"] == s[i]
    assert report["confusion_matrix"] == sklearn_metrics.confusion_matrix(y_true, y_pred, labels=[0, 1, 2, 3]).tolist()
    assert report["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))


def test_a_validation_split_too_small_to_hold_anything_is_a_clear_error():
    from extractor.heads.train import train_head

    vectors = np.eye(4, 8, dtype=np.float32)
    with pytest.raises(AlexfeatError, match="leaves no validation rows"):
        train_head(vectors, ["a/1", "a/2", "b/1", "b/2"], ["a", "a", "b", "b"], TrainConfig(val_fraction=0.1))


def test_train_head_dir_is_the_python_form_of_train(data, tmp_path, caplog):
    from extractor import train_head_dir

    told: list[str] = []
    result = train_head_dir(data["emb"], tmp_path / "head", kind="linear", seed=3, progress=False, warn=told.append)
    assert told == ["1 of 31 rows have no label in 'label' and are left out"]
    assert result.path == tmp_path / "head" and result.classes == ["Stripes", "checks", "discs"]
    assert not result.finetuned and result.val_accuracy == result.metrics["val_accuracy"] >= 0.8
    assert json.loads((tmp_path / "head" / "metrics.json").read_text())["seed"] == 3
    # Without a callback the warning goes to the log; a bad setting is refused before anything is read.
    train_head_dir(data["emb"], tmp_path / "head2", kind="linear", epochs=1, val_fraction=0, progress=False)
    assert "1 of 31 rows have no label" in caplog.text
    with pytest.raises(AlexfeatError, match="unknown head 'tree'"):
        train_head_dir(tmp_path / "nowhere", tmp_path / "head3", kind="tree")
