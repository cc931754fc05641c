"""Hostile input for every command: each exits 1 or 2 with one ``Error:`` line that says what to do, never a
traceback. The per-case tests below pin the cases that crashed once; ``test_no_command_shows_a_traceback`` runs
every command with absurd arguments (``catch_exceptions=False``: an unexpected exception fails the test)."""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from extractor.cli import main
from extractor.errors import AlexfeatError, WeightsError
from extractor.network.archs import CONV_LAYERS
from extractor.network.torch_checkpoint import LEGACY_MAGIC
from extractor.network.weights import read_h5, resolve_weights
from index.build import build_index_dir
from index.search import Searcher
from index.update import remove_from_index
from tests.index_data import clustered, paths_for, write_dataset
from tests.storedata import make_meta

N = 40
BIG = 2**63  # one past the largest int64


def run(*args: object, cwd: Path | None = None) -> tuple[int, str]:
    """``alexfeat ARGS`` in-process; the exit code and stdout + stderr. Any exception but SystemExit propagates."""
    before = os.getcwd()
    os.chdir(cwd or before)
    try:
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(before)
    return result.exit_code, result.output


def _head(directory: Path, classes: list[str], dim: int) -> Path:
    """A real Keras head directory written by hand (as a copy from two runs would be): dim → len(classes)."""
    import keras

    directory.mkdir()
    model = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(3, activation="softmax")])
    model.save(directory / "head.keras")
    (directory / "classes.json").write_text(json.dumps(classes))
    (directory / "metrics.json").write_text(json.dumps({"embedding_metadata": make_meta(32).to_dict()}))
    return directory


def _h5_without_arch(path: Path) -> Path:
    with h5py.File(path, "w") as h5:
        for name in CONV_LAYERS:
            group = h5.create_group(name)
            group["kernel"], group["bias"] = np.zeros((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)
        h5.attrs["alexfeat"] = json.dumps({"format": 1, "source": "x.pth", "source_sha256": "ab" * 32})
    return path


def _state_dict_pickle(numel: int) -> bytes:
    """A state-dict pickle naming one FloatStorage of ``numel`` values (torch.FloatStorage, an allowed name)."""
    fake = types.ModuleType("torch")

    class FloatStorage:  # pickled by name as torch.FloatStorage, which the restricted unpickler allows
        pass

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    fake.FloatStorage = FloatStorage  # type: ignore[attr-defined]

    class StoragePickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return ("storage", FloatStorage, "0", "cpu", numel) if obj == "STORAGE" else None

    saved = sys.modules.get("torch")
    sys.modules["torch"] = fake
    try:
        buffer = io.BytesIO()
        StoragePickler(buffer, protocol=2).dump({"features.0.weight": "STORAGE"})
    finally:
        if saved is None:
            del sys.modules["torch"]
        else:
            sys.modules["torch"] = saved
    return buffer.getvalue()


def _legacy_pth_claiming(path: Path, numel: int) -> Path:
    """A legacy torch checkpoint with only allowed pickle names whose storage header claims ``numel`` floats."""
    head = pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps({}, 2)
    keys = pickle.dumps(["0"], 2)
    path.write_bytes(head + _state_dict_pickle(numel) + keys + numel.to_bytes(8, "little") + b"\0" * 64)
    return path


def _zip_pth_bomb(path: Path, nbytes: int) -> Path:
    """A zip torch checkpoint whose storage is ``nbytes`` of zeros, deflated to a few KiB."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data.pkl", _state_dict_pickle(nbytes // 4))
        archive.writestr("bomb/data/0", bytes(nbytes))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    write_dataset(root / "emb", paths_for(N), clustered(N))
    build_index_dir(root / "emb", root / "idx", factory="Flat")
    (root / "ids.txt").write_text(f"{BIG * 4}\n")
    (root / "images").mkdir()
    return {
        "root": root,
        "emb": root / "emb",
        "idx": root / "idx",
        "ids": root / "ids.txt",
        "images": root / "images",
        "head": _head(root / "head", ["cat", "dog", "owl"], 32),
        "head_classes": _head(root / "head_classes", ["cat", "dog"], 32),
        "head_dim": _head(root / "head_dim", ["cat", "dog", "owl"], 16),
        "h5": _h5_without_arch(root / "noarch.weights.h5"),
        "pth": _legacy_pth_claiming(root / "huge.pth", 2**40),
    }


# ----------------------------------------------------------------------------------------------- the cases


def test_ids_above_int64_are_usage_errors_in_the_cli_and_clear_errors_in_python(world: dict[str, Path]) -> None:
    code, output = run("search", world["idx"], "--id", 2**64)
    assert code == 2 and "--id" in output and "Traceback" not in output
    code, output = run("index", "remove", world["idx"], "--id", BIG)
    assert code == 2 and "--id" in output
    code, output = run("index", "remove", world["idx"], "--from-file", world["ids"])
    assert code == 1 and output.startswith("Error: id ") and "out of range" in output
    with pytest.raises(AlexfeatError, match="out of range"):
        Searcher(world["idx"]).search_ids([BIG])
    with pytest.raises(AlexfeatError, match="out of range"):
        remove_from_index(world["idx"], ids=[-BIG - 1])


def test_k_is_capped_at_the_index_size_before_anything_is_allocated(world: dict[str, Path]) -> None:
    searcher = Searcher(world["idx"])
    some_id = int(searcher.dir.lookup.ids[0])
    code, output = run("search", world["idx"], "--id", some_id, "-k", 10**12, "--json")
    assert code == 0, output
    assert len(json.loads(output)["results"]) == N
    assert len(searcher.search_vectors(clustered(2, seed=3), 20_000_000)[0]) == N


@pytest.mark.parametrize("out", [".", "/", ".."])
def test_train_into_the_current_directory_or_above_is_refused_before_tensorflow_loads(
    world: dict[str, Path], tmp_path: Path, out: str
) -> None:
    code, output = run("train", world["emb"], "-o", out, cwd=tmp_path)
    assert code == 1 and output.startswith("Error: output ") and "current directory or one above it" in output


def test_a_weights_h5_without_arch_is_a_clear_error(world: dict[str, Path]) -> None:
    with pytest.raises(WeightsError, match="lacks a valid arch"):
        read_h5(world["h5"])
    code, output = run("weights", "info", world["h5"])
    assert code == 1 and output.startswith("Error: ") and "alexfeat weights convert" in output


def test_a_legacy_checkpoint_claiming_a_huge_storage_is_refused_before_allocating(world: dict[str, Path]) -> None:
    with pytest.raises(WeightsError, match="declares 1,099,511,627,776 values, more than the file holds"):
        resolve_weights(str(world["pth"]))


def test_a_zip_checkpoint_that_unpacks_far_beyond_its_size_is_refused_before_reading(tmp_path: Path) -> None:
    bomb = _zip_pth_bomb(tmp_path / "bomb.pth", 16 << 20)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(WeightsError, match="claims 16,777,216 bytes unpacked from a"):
        resolve_weights(str(bomb))


@pytest.mark.parametrize(
    "head, message",
    [
        ("head_classes", "gives 3 class probabilities but .* names 2 classes"),
        ("head_dim", "expects 16-d embeddings but .* records 32-d ones"),
    ],
)
def test_a_head_that_disagrees_with_its_classes_or_embeddings_is_a_clear_error(
    world: dict[str, Path], head: str, message: str
) -> None:
    from extractor.heads.classifier_dir import read_classifier_dir

    with pytest.raises(AlexfeatError, match=message):
        read_classifier_dir(world[head]).load_model()
    code, output = run("predict", world[head], "--embeddings", world["emb"])
    assert code == 1 and output.startswith("Error: ") and "train the head again" in output


# ------------------------------------------------------------------------------------------- every command


def _cases(w: dict[str, Path]) -> list[tuple[list[object], int]]:
    some_id = int(Searcher(w["idx"]).dir.lookup.ids[0])
    r = w["root"]
    return [
        (["weights", "info", w["h5"]], 1),
        (["weights", "info", w["pth"]], 1),
        (["weights", "info", r / "nothing.pth"], 1),
        (["weights", "convert", w["pth"], "-o", r / "x.weights.h5"], 1),
        (["weights", "convert", "random", "-o", r / "x.txt"], 1),
        (["embed", r / "missing", "-o", r / "e2"], 1),
        (["embed", w["images"], "-o", r / "e3", "--batch-size", 10**30], 2),
        (["embed", w["images"], "-o", w["idx"], "--workers", -1], 2),
        (["index", "build", w["emb"], "-o", r / "i2", "--factory", "IVF99999999999999999999,Flat"], 1),
        (["index", "build", w["emb"], "-o", r / "i3", "--memory-budget", "-5G"], 2),
        (["index", "build", w["emb"], "-o", r / "i4", "--target-recall", "nan"], 1),
        (["index", "build", r / "missing", "-o", r / "i5"], 1),
        (["index", "build", w["emb"], "-o", w["ids"]], 2),
        (["index", "add", w["idx"], r / "missing"], 1),
        (["index", "add", r / "missing", w["emb"]], 1),
        (["index", "remove", w["idx"], "--id", -(BIG + 1)], 2),
        (["index", "remove", w["idx"], "--from-file", w["ids"]], 1),
        (["index", "remove", w["idx"], "--path", "a\nb\tc"], 1),
        (["search", w["idx"], "--id", BIG], 2),
        (["search", w["idx"], "--id", some_id, "-k", 0], 2),
        (["search", w["idx"], "--path", "../../etc/passwd"], 1),
        (["search", w["emb"], "--id", some_id], 1),
        (["search", w["idx"], "--id", some_id, "--html", r / "missing" / "deep" / "x.html"], 1),
        (["dedup", w["emb"], "--threshold", 0], 2),
        (["dedup", w["emb"], "--threshold", "inf"], 2),
        (["dedup", w["emb"], "-o", r / "x.xlsx"], 1),
        (["dedup", w["idx"]], 1),
        (["train", w["emb"], "-o", w["emb"]], 1),
        (["train", w["emb"], "-o", w["ids"]], 2),
        (["predict", w["head_classes"], "--embeddings", w["emb"]], 1),
        (["predict", w["head_dim"], "--embeddings", w["emb"]], 1),
        (["predict", w["head"], "--embeddings", w["idx"]], 1),
        (["predict", w["emb"], "--embeddings", w["emb"]], 1),
        (["export", w["head"], "-o", "."], 1),
        (["export", w["head"], "-o", ".", "--format", "savedmodel"], 1),
        (["export", w["head"], "-o", r / "m.keras", "--format", "onnx"], 2),
        (["finetune", w["images"], "-o", ".", "--from", w["head"]], 1),
        (["finetune", w["images"], "-o", r / "ft", "--from", w["emb"]], 1),
    ]


def test_no_command_shows_a_traceback(world: dict[str, Path], tmp_path: Path) -> None:
    failures = []
    for args, expected in _cases(world):
        code, output = run(*args, cwd=tmp_path)
        lines = [line for line in output.splitlines() if line.strip()]
        ok = code == expected and "Traceback" not in output and lines and lines[-1].startswith("Error: ")
        if not ok:
            failures.append(f"alexfeat {' '.join(map(str, args))} -> {code}: {output[-400:]}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------------- outputs others open safely

HOSTILE_NAMES = ['=HYPERLINK("http://evil")/a.jpg', "two\nlines.jpg", "tab\there.jpg", "@sum.jpg", "-rf.jpg"]


@pytest.fixture(scope="module")
def hostile_names(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset whose five names are exact duplicates of each other (one dedup group)."""
    emb = tmp_path_factory.mktemp("names") / "emb"
    write_dataset(emb, HOSTILE_NAMES, np.repeat(clustered(1), len(HOSTILE_NAMES), axis=0))
    return emb


def test_dedup_csv_neutralises_formulas_and_json_keeps_exact_names(hostile_names: Path, tmp_path: Path) -> None:
    import csv

    code, output = run("dedup", hostile_names, "-o", tmp_path / "d.csv", "--no-progress", "--no-verify")
    assert code == 0, output
    with open(tmp_path / "d.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    paths = sorted(row[2] for row in rows[1:])
    assert paths == sorted(
        ["'" + n if n[0] in "=+-@" else n for n in HOSTILE_NAMES]
    )  # the newline stays inside its quoted cell
    assert not [p for p in paths if p[0] in "=+-@\t\r"]
    code, output = run("dedup", hostile_names, "-o", tmp_path / "d.json", "--no-progress", "--no-verify")
    assert sorted(m["path"] for m in json.loads((tmp_path / "d.json").read_text())[0]) == sorted(HOSTILE_NAMES)


def test_plain_text_tables_keep_one_line_per_row(hostile_names: Path, tmp_path: Path) -> None:
    code, output = run("dedup", hostile_names, "--no-progress", "--no-verify")  # no images: vectors only
    assert code == 0
    lines = output.splitlines()
    assert len(lines) == 2 and lines[0].startswith("group 1 (5): ") and "two\\nlines.jpg" in lines[0]
    assert "tab\\there.jpg" in lines[0] and "\t" not in lines[0]
    build_index_dir(hostile_names, tmp_path / "idx", factory="Flat")
    code, output = run("search", tmp_path / "idx", "--path", "two\nlines.jpg", "-k", 5)
    assert code == 0, output
    lines = [line for line in output.splitlines() if line]
    own = Searcher(tmp_path / "idx").dir.lookup.path_to_id()["two\nlines.jpg"]
    assert lines[0] == f"query: id {own}  two\\nlines.jpg"
    assert len(lines) == 2 + 5  # the header line, then one line per hit
    assert sorted(line.rsplit("  ", 1)[1] for line in lines[2:]) == sorted(n.translate(ESCAPED) for n in HOSTILE_NAMES)
    assert "\t" not in output


ESCAPED = str.maketrans({"\n": "\\n", "\t": "\\t"})
