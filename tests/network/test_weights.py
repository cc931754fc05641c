"""Weight sources: torch-free checkpoint reading, safety, damaged files, conversion and the CLI."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from extractor.cli import main
from extractor.errors import WeightsError
from extractor.network import weights as weights_module
from extractor.network.torch_checkpoint import LEGACY_MAGIC, load_state_dict
from extractor.network.weights import convert_weights, read_h5, resolve_weights, write_h5


class _RunsCommand:
    """Pickles to a call of os.system: what a malicious checkpoint does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_zip_and_legacy_formats_give_the_same_tensors(fixtures_dir):
    zipped = load_state_dict(fixtures_dir / "torchvision_alexnet_features_zip.pth")
    legacy = load_state_dict(fixtures_dir / "torchvision_alexnet_full_legacy.pth")
    assert set(zipped) < set(legacy)
    for name, tensor in zipped.items():
        np.testing.assert_array_equal(tensor, legacy[name])
    # classifier.1.weight is stored as a stride-0 view: one stored row repeated.
    fc6 = legacy["classifier.1.weight"]
    assert fc6.shape == (4096, 9216) and fc6.dtype == np.float32
    np.testing.assert_array_equal(fc6[0], fc6[4095])
    assert legacy["classifier.6.weight"].std() > 0


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, fmt):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"features.0.weight": _RunsCommand(f"touch {marker}")}, protocol=2)
    path = tmp_path / f"evil_{fmt}.pth"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("evil/data.pkl", payload)
            archive.writestr("evil/version", "3\n")
    else:
        path.write_bytes(pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps({}, 2) + payload)
    with pytest.raises(WeightsError, match=r"refusing to load checkpoint: its pickle asks for posix\.system"):
        resolve_weights(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("name", ["torchvision_alexnet_features_zip.pth", "torchvision_alexnet_full_legacy.pth"])
def test_truncated_checkpoint_is_a_clear_error(tmp_path, fixtures_dir, name):
    data = (fixtures_dir / name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated"):
        resolve_weights(str(cut))


def test_npz_missing_a_layer_names_it(tmp_path, caffe_weights):
    with np.load(caffe_weights) as npz:
        arrays = {k: npz[k] for k in npz.files if not k.startswith("conv3_")}
    partial = tmp_path / "partial.npz"
    np.savez(partial, **arrays)
    with pytest.raises(WeightsError, match="missing conv3_weight, conv3_bias"):
        resolve_weights(str(partial))


def test_unknown_file_type_and_missing_file(tmp_path):
    odd = tmp_path / "weights.onnx"
    odd.write_bytes(b"not weights")
    with pytest.raises(WeightsError, match="unknown file type"):
        resolve_weights(str(odd))
    with pytest.raises(WeightsError, match="no such file"):
        resolve_weights(str(tmp_path / "absent.pth"))


def test_h5_round_trip_keeps_tensors_and_source_sha(tmp_path, fixtures_dir):
    original = resolve_weights(str(fixtures_dir / "torchvision_alexnet_full_legacy.pth"))
    target = tmp_path / "tv.weights.h5"
    write_h5(original, target)
    again = read_h5(target)
    assert again.arch == "torchvision" and again.has_fc
    assert again.sha256 == original.sha256  # compatibility follows the source file, not the cache
    for name, (kernel, bias) in original.tensors.items():
        np.testing.assert_array_equal(again.tensors[name][0], kernel)
        np.testing.assert_array_equal(again.tensors[name][1], bias)


def test_convert_weights_writes_a_weights_h5_that_resolves_and_refuses_what_it_cannot(tmp_path, fixtures_dir):
    source = fixtures_dir / "torchvision_alexnet_full_legacy.pth"
    converted = convert_weights(source, tmp_path / "tv.weights.h5")
    again = resolve_weights(tmp_path / "tv.weights.h5")
    assert (again.arch, again.sha256, again.has_fc) == (converted.arch, converted.sha256, True)
    with pytest.raises(WeightsError, match=r"must end in \.weights\.h5"):
        convert_weights(source, tmp_path / "tv.h5")
    with pytest.raises(WeightsError, match="no tensors to convert"):
        convert_weights("random", tmp_path / "random.weights.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tv.weights.h5"]


def test_imagenet_download_failure_names_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(weights_module, "IMAGENET_URL", (tmp_path / "nowhere.pth").as_uri())
    with pytest.raises(WeightsError, match="could not download the ImageNet weights") as info:
        resolve_weights("imagenet")
    assert all(name in str(info.value) for name in ("--weights", "ALEXFEAT_WEIGHTS", ".npz", ".pth", ".weights.h5"))


def test_imagenet_download_with_a_wrong_hash_is_refused_and_removed(tmp_path, monkeypatch, fixtures_dir):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(
        weights_module, "IMAGENET_URL", (fixtures_dir / "torchvision_alexnet_features_zip.pth").as_uri()
    )
    with pytest.raises(WeightsError, match="does not start with 7be5be79"):
        resolve_weights("imagenet")
    assert not list(Path(tmp_path / "keras").rglob("*.pth"))


def test_imagenet_uses_the_converted_cache(tmp_path, monkeypatch, fixtures_dir):
    """Once converted, 'imagenet' is read from the .weights.h5 cache without the network."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    source = resolve_weights(str(fixtures_dir / "torchvision_alexnet_full_legacy.pth"))
    (tmp_path / "models").mkdir()
    write_h5(source, tmp_path / "models" / "alexnet-owt-7be5be79.weights.h5")
    monkeypatch.setattr(weights_module, "IMAGENET_URL", (tmp_path / "nowhere.pth").as_uri())
    cached = resolve_weights("imagenet")
    assert cached.source == "imagenet" and cached.arch == "torchvision" and cached.sha256 == source.sha256


def test_cli_weights_info_and_convert(tmp_path, caffe_weights):
    runner = CliRunner()
    result = runner.invoke(main, ["weights", "info", str(caffe_weights), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["arch"] == "caffe" and report["parameters"] == 2_334_080
    assert report["sha256"].startswith("7d539354") and not report["has_classifier"]
    target = tmp_path / "caffe.weights.h5"
    result = runner.invoke(main, ["weights", "convert", str(caffe_weights), "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert read_h5(target).sha256 == report["sha256"]
    bad = runner.invoke(main, ["weights", "convert", str(caffe_weights), "-o", str(tmp_path / "x.h5")])
    assert bad.exit_code == 1 and "must end in .weights.h5" in bad.output
    missing = runner.invoke(main, ["weights", "info", str(tmp_path / "none.npz")])
    assert missing.exit_code == 1 and "no such file" in missing.output and "Traceback" not in missing.output
