"""``alexfeat embed`` end to end: awkward files, resume, locking, incompatible output, a killed job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from extractor.cli import main
from extractor.store import dataset_lock, list_parts, load_dataset, path_id, read_errors
from tests.imagefiles import make_awkward_tree, make_photo, make_sideways_photo, raw_name

RANDOM = ["--weights", "random", "--batch-size", "4", "--no-progress"]


def embed(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["embed", *args], catch_exceptions=False)
    return result.exit_code, result.output


def photo_tree(root: Path, count: int, size: tuple[int, int] = (96, 72)) -> list[str]:
    paths = []
    for i in range(count):
        rel = f"class{i % 2}/img_{i:03d}.jpg"
        make_photo(root / rel, size, seed=i)
        paths.append(rel)
    return paths


def test_awkward_tree_embeds_every_good_file_and_records_every_bad_one(tmp_path):
    tree = make_awkward_tree(tmp_path / "images")
    out = tmp_path / "emb"
    code, output = embed(str(tree.root), "-o", str(out), *RANDOM)
    assert code == 0, output
    assert f"embedded {len(tree.good)}, unchanged 0, errors {len(tree.errors)}" in output
    data = load_dataset(out, columns=("id", "path", "label", "sha256", "width", "height"))
    assert sorted(data.paths) == sorted(tree.good)
    assert list(data.ids) == [path_id(p) for p in data.paths] and len(set(data.ids)) == len(data.ids)
    np.testing.assert_allclose(np.linalg.norm(data.vectors, axis=1), 1.0, rtol=1e-5)
    assert data.vectors.shape[1] == 256 and data.meta.arch == "torchvision" and data.meta.weights_source == "random"
    assert all(label == p.split("/")[0] for p, label in zip(data.paths, data.labels) if "/" in p)
    errors = read_errors(out).to_pylist()
    assert {e["path"]: e["error"] for e in errors} == tree.errors
    assert all(e["message"] for e in errors)
    assert f"errors {len(tree.errors)} (list them: alexfeat errors {out})" in output
    # The directory reads as the embeddings alone, whatever else it holds.
    table = pq.read_table(out)
    assert table.num_rows == len(tree.good) and "error" not in table.column_names
    listed = CliRunner().invoke(main, ["errors", str(out), "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout) == errors
    listed = CliRunner().invoke(main, ["errors", str(out)])
    lines = listed.stdout.splitlines()
    assert listed.exit_code == 0 and len(lines) == len(errors)
    assert sorted(line.split("\t")[:2] for line in lines) == sorted([e["path"], e["error"]] for e in errors)
    assert f"{len(errors)} file(s) could not be embedded" in listed.stderr


def test_sideways_photo_with_exif_tag_embeds_like_the_upright_one(tmp_path):
    make_photo(tmp_path / "images" / "upright.jpg", (200, 150), seed=7)
    make_sideways_photo(tmp_path / "images" / "sideways.jpg", 6, (200, 150), seed=7)
    code, output = embed(str(tmp_path / "images"), "-o", str(tmp_path / "emb"), *RANDOM)
    assert code == 0, output
    data = load_dataset(tmp_path / "emb", columns=("path", "width", "height"))
    rows = dict(zip(data.paths, range(len(data.paths))))
    up, side = data.vectors[rows["upright.jpg"]], data.vectors[rows["sideways.jpg"]]
    assert float(up @ side) > 0.99
    assert (data.width[rows["sideways.jpg"]], data.height[rows["sideways.jpg"]]) == (200, 150)


def test_rerun_embeds_only_new_and_changed_files_and_prune_drops_vanished(tmp_path):
    images, out = tmp_path / "images", tmp_path / "emb"
    paths = photo_tree(images, 6)
    assert embed(str(images), "-o", str(out), *RANDOM)[0] == 0
    first = load_dataset(out, columns=("id", "path"))

    code, output = embed(str(images), "-o", str(out), "--no-progress")  # the recorded weights: no option needed
    assert code == 0 and output == "up to date: unchanged 6, nothing to embed\n"

    make_photo(images / "class0" / "new.jpg", (96, 72), seed=99)  # new
    make_photo(images / paths[1], (96, 72), seed=100)  # same size? content changed either way
    os.utime(images / paths[2], ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same content
    code, output = embed(str(images), "-o", str(out), *RANDOM)
    assert code == 0 and "embedded 2, unchanged 5" in output
    second = load_dataset(out, columns=("id", "path"))
    assert len(second) == 7 and len(set(second.ids)) == 7
    changed = second.paths.index(paths[1])
    assert not np.allclose(second.vectors[changed], first.vectors[first.paths.index(paths[1])])

    (images / paths[0]).unlink()
    assert "unchanged 6" in embed(str(images), "-o", str(out), *RANDOM)[1]
    assert paths[0] in load_dataset(out, embeddings=False).paths  # kept without --prune
    code, output = embed(str(images), "-o", str(out), *RANDOM, "--prune")
    assert code == 0
    assert sorted(load_dataset(out, embeddings=False).paths) == sorted([*paths[1:], "class0/new.jpg"])


def test_known_errors_are_retried_only_when_asked(tmp_path):
    images, out = tmp_path / "images", tmp_path / "emb"
    photo_tree(images, 2, size=(96, 72))
    make_photo(images / "big.jpg", (400, 300), seed=7)
    code, output = embed(str(images), "-o", str(out), *RANDOM, "--max-pixels", "10000")
    assert code == 0 and "embedded 2, unchanged 0, errors 1" in output
    assert read_errors(out).column("error").to_pylist() == ["too_large"]
    code, output = embed(str(images), "-o", str(out), *RANDOM)  # limit raised, file unchanged: still skipped
    assert code == 0 and output == "up to date: unchanged 2 (+1 known errors skipped), nothing to embed\n"
    code, output = embed(str(images), "-o", str(out), *RANDOM, "--retry-errors")
    assert code == 0 and "embedded 1, unchanged 2, errors 0" in output
    assert read_errors(out).num_rows == 0 and "big.jpg" in load_dataset(out, embeddings=False).paths


@pytest.mark.skipif(os.name != "posix", reason="names as raw bytes are a POSIX thing")
def test_a_file_name_that_is_not_utf8_is_embedded_under_an_escaped_path_and_resumes(tmp_path):
    images, out = tmp_path / "images", tmp_path / "emb"
    photo_tree(images, 2)
    try:
        make_photo(raw_name(images, b"caf\xe9.jpg"), (96, 72), seed=9)
    except OSError as exc:
        pytest.skip(f"this file system refuses non-UTF-8 names: {exc}")
    code, output = embed(str(images), "-o", str(out), *RANDOM)
    assert code == 0 and "embedded 3, unchanged 0, errors 0" in output, output
    data = load_dataset(out, embeddings=False)
    assert sorted(data.paths) == ["caf\\xe9.jpg", "class0/img_000.jpg", "class1/img_001.jpg"]
    code, output = embed(str(images), "-o", str(out), *RANDOM)
    assert code == 0 and "up to date: unchanged 3" in output


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="CPU time limits need interval timers")
def test_a_file_over_the_decode_cpu_limit_is_stopped_and_recorded_as_timeout(tmp_path):
    from PIL import Image

    images, out = tmp_path / "images", tmp_path / "emb"
    photo_tree(images, 2)
    # 81 MP of one colour: a 1 MB PNG that takes ~0.7 s of CPU to inflate (a stand-in for a decoder stuck on a
    # hostile file; the default limit is 60 s).
    Image.new("RGB", (9000, 9000), (120, 60, 30)).save(images / "slow.png", compress_level=1)
    code, output = embed(str(images), "-o", str(out), *RANDOM, "--max-decode-seconds", "0.2")
    assert code == 0 and "embedded 2, unchanged 0, errors 1" in output, output
    assert read_errors(out).select(["path", "error"]).to_pylist() == [{"path": "slow.png", "error": "timeout"}]
    code, output = embed(str(images), "-o", str(out), *RANDOM, "--retry-errors", "--max-decode-seconds", "0")
    assert code == 0 and "embedded 1, unchanged 2, errors 0" in output, output  # 0: no limit


def test_a_folder_that_cannot_be_listed_is_recorded_until_it_can(tmp_path, monkeypatch):
    import extractor.images.discover

    images, out = tmp_path / "images", tmp_path / "emb"
    photo_tree(images, 2)
    make_photo(images / "locked" / "x.jpg", (96, 72))
    real_scandir = os.scandir

    def scandir(path):  # the file system refusing one folder, as chmod 0 does for a user other than root
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(extractor.images.discover.os, "scandir", scandir)
    code, output = embed(str(images), "-o", str(out), *RANDOM)
    assert code == 0 and "embedded 2, unchanged 0, errors 1" in output, output
    assert read_errors(out).select(["path", "error"]).to_pylist() == [{"path": "locked", "error": "unreadable"}]
    monkeypatch.setattr(extractor.images.discover.os, "scandir", real_scandir)
    code, output = embed(str(images), "-o", str(out), *RANDOM)  # readable again: embedded, the record gone
    assert code == 0 and "embedded 1, unchanged 2, errors 0" in output, output
    assert read_errors(out).num_rows == 0


def test_incompatible_existing_output_is_refused_and_overwrite_replaces_it(tmp_path):
    images, out = tmp_path / "images", tmp_path / "emb"
    photo_tree(images, 2)
    assert embed(str(images), "-o", str(out), *RANDOM)[0] == 0
    code, output = embed(str(images), "-o", str(out), *RANDOM, "--pooling", "max")
    assert code == 1 and "--pooling max (it was embedded with pooling gem)" in output and "--overwrite" in output
    code, output = embed(str(images), "-o", str(out), *RANDOM, "--tta", "flip")  # a TTA dataset is another model
    assert code == 1 and "--tta flip (it was embedded with tta none)" in output, output
    code, output = embed(str(images), "-o", str(out), *RANDOM, "--pooling", "max", "--overwrite")
    assert code == 0 and "embedded 2" in output
    assert load_dataset(out, embeddings=False).meta.pooling == "max"


def test_a_rerun_uses_the_recorded_weights_and_refuses_others(tmp_path, caffe_weights, monkeypatch):
    """Offline, with no weights option, a rerun finds the recorded file by path; other weights are refused."""
    monkeypatch.delenv("ALEXFEAT_WEIGHTS", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no cached imagenet weights: a download would fail
    images, out, weights = tmp_path / "images", tmp_path / "emb", tmp_path / "w" / "caffe.npz"
    weights.parent.mkdir()
    shutil.copy(caffe_weights, weights)
    photo_tree(images, 1)
    fast = ["--batch-size", "4", "--no-progress", "--workers", "0"]
    assert embed(str(images), "-o", str(out), "--weights", str(weights), *fast)[0] == 0
    make_photo(images / "class0" / "new.jpg", (96, 72), seed=50)
    code, output = embed(str(images), "-o", str(out), *fast)
    assert code == 0 and "embedded 1, unchanged 1" in output, output
    assert load_dataset(out, embeddings=False).meta.weights_source == str(weights)
    code, output = embed(str(images), "-o", str(out), *RANDOM)
    assert code == 1 and "--weights random (sha256 random" in output and "--overwrite" in output, output
    moved = tmp_path / "elsewhere.npz"
    weights.rename(moved)
    code, output = embed(str(images), "-o", str(out), *fast)  # the recorded file is gone: say what to pass
    assert code == 1 and "no such file" in output and "pass --weights" in output, output
    code, output = embed(str(images), "-o", str(out), "--weights", str(moved), *fast)  # the same file elsewhere
    assert code == 0 and "up to date: unchanged 2" in output, output


def test_a_failed_download_is_the_only_thing_printed(tmp_path):
    """TensorFlow's start-up lines never come before the error, and it names the ways out."""
    photo_tree(tmp_path / "images", 1)
    script = (
        "import sys\nimport extractor.network.weights as w\nfrom extractor.cli import run\n"
        f"w.IMAGENET_URL = {(tmp_path / 'nowhere.pth').as_uri()!r}\n"
        f"sys.argv = ['alexfeat', 'embed', {str(tmp_path / 'images')!r}, '-o', {str(tmp_path / 'emb')!r}]\nrun()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("ALEXFEAT_WEIGHTS", "TF_CPP_MIN_LOG_LEVEL")}
    env["KERAS_HOME"] = str(tmp_path / "keras")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1 and done.stderr.startswith("Error: could not download"), done.stderr
    for needed in ("--weights", "ALEXFEAT_WEIGHTS", ".pth", ".npz", ".weights.h5"):
        assert needed in done.stderr
    assert "absl" not in done.stderr + done.stdout and "I0000" not in done.stderr + done.stdout


def test_errors_of_a_missing_or_clean_dataset(tmp_path):
    missing = CliRunner().invoke(main, ["errors", str(tmp_path / "nope")])
    assert (
        missing.exit_code == 1
        and "Error: embeddings directory" in missing.output
        and "does not exist" in missing.output
    )
    (tmp_path / "emb").mkdir()
    clean = CliRunner().invoke(main, ["errors", str(tmp_path / "emb"), "--json"])
    assert clean.exit_code == 0 and json.loads(clean.stdout) == []
    make_photo(tmp_path / "images" / "a.jpg", (32, 24), seed=0)  # the images folder given instead of the dataset
    wrong = CliRunner().invoke(main, ["errors", str(tmp_path / "images")])
    assert wrong.exit_code == 1 and "is not an embeddings dataset: give the -o directory" in wrong.output


def test_a_folder_without_images_says_so_instead_of_up_to_date(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    for folder in ("empty", "notes"):
        code, output = embed(str(tmp_path / folder), "-o", str(tmp_path / f"emb_{folder}"), *RANDOM)
        assert code == 0 and output.startswith("found no images (files ending .avif .bmp .gif .jpeg .jpg"), output
        assert "up to date" not in output


def test_embedding_another_folder_into_a_dataset_warns_that_its_images_folder_changes(tmp_path, caplog):
    photo_tree(tmp_path / "a", 1)
    photo_tree(tmp_path / "b", 1)
    assert embed(str(tmp_path / "a"), "-o", str(tmp_path / "emb"), *RANDOM)[0] == 0
    assert not caplog.records
    assert embed(str(tmp_path / "a"), "-o", str(tmp_path / "emb"), "--no-progress")[0] == 0  # a rerun: silent
    assert not caplog.records
    assert embed(str(tmp_path / "b"), "-o", str(tmp_path / "emb"), "--no-progress")[0] == 0
    [record] = caplog.records
    assert record.levelname == "WARNING" and f"holds images of {tmp_path / 'a'}; this run reads" in record.message


def test_second_job_on_the_same_output_is_refused(tmp_path):
    images, out = tmp_path / "images", tmp_path / "emb"
    photo_tree(images, 1)
    out.mkdir()
    with dataset_lock(out):
        code, output = embed(str(images), "-o", str(out), *RANDOM)
    assert code == 1 and "another alexfeat job" in output


def test_a_pattern_the_shell_expanded_is_a_usage_error_that_says_to_quote_it(tmp_path):
    shards = [str(tmp_path / f"{n:05d}.tar") for n in range(5)]  # what `embed shards/*.tar` passes unquoted
    code, output = embed(*shards, "-o", str(tmp_path / "emb"), *RANDOM)
    assert code == 2 and "give one SOURCE, not 5" in output and "quote a shard pattern" in output, output
    assert not (tmp_path / "emb").exists()


def test_bad_arguments_are_clear_errors(tmp_path, caffe_weights):
    code, output = embed(str(tmp_path / "missing"), "-o", str(tmp_path / "emb"), *RANDOM)
    assert code == 1 and "does not exist" in output
    photo_tree(tmp_path / "images", 1)
    code, output = embed(
        str(tmp_path / "images"), "-o", str(tmp_path / "emb"), "--weights", str(caffe_weights), "--layer", "fc6"
    )
    assert code == 1 and "conv1-conv5 only" in output
    code, output = embed(str(tmp_path / "images"), "-o", str(tmp_path / "emb"), *RANDOM, "--resize", "fit300")
    assert code == 1 and "squash256-center227" in output


def test_pipeline_reproduces_the_reference_caffe_features(tmp_path, dev_images, fixtures_dir, caffe_weights):
    """Decoding + preprocessing + network agree with the independent reference forward pass."""
    with np.load(fixtures_dir / "caffe_alexnet_golden.npz") as npz:
        golden_paths, golden = list(npz["paths"]), npz["pool5_gap"]
    images = tmp_path / "images"
    for rel in golden_paths:
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes((dev_images / rel).read_bytes())
    code, output = embed(str(images), "-o", str(tmp_path / "emb"), "--weights", str(caffe_weights), "--pooling", "avg")
    assert code == 0, output
    data = load_dataset(tmp_path / "emb")
    expected = golden / np.linalg.norm(golden, axis=1, keepdims=True)
    for i, rel in enumerate(golden_paths):
        # The reference subtracts the 256x256 mean image, alexfeat its per-channel mean (docs/design.md).
        assert float(data.vectors[data.paths.index(rel)] @ expected[i]) > 0.995


def test_killed_job_leaves_complete_parts_and_the_rerun_finishes(tmp_path):
    images, out = tmp_path / "images", tmp_path / "emb"
    paths = photo_tree(images, 40, size=(64, 48))
    cmd = [
        sys.executable,
        "-m",
        "extractor.cli",
        "embed",
        str(images),
        "-o",
        str(out),
        "--weights",
        "random",
        "--batch-size",
        "2",
        "--rows-per-part",
        "2",
        "--workers",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list_parts(out) if out.exists() else []) < 2:
        time.sleep(0.05)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list_parts(out), "the job wrote no part before it was killed"
    deadline = time.time() + 10
    while time.time() < deadline and any(map(running, workers)):
        time.sleep(0.1)
    assert not any(map(running, workers)), "decode worker processes outlived the killed job"
    partial = pq.read_table(out)  # only complete parts are visible
    assert 0 < partial.num_rows < len(paths)
    code, output = embed(str(images), "-o", str(out), *RANDOM)
    assert code == 0, output
    final = load_dataset(out, embeddings=False)
    assert sorted(final.paths) == sorted(paths) and len(set(final.ids)) == len(paths)


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_script_without_a_main_guard_gets_a_clear_error_and_no_file_is_blamed(tmp_path):
    images, out = tmp_path / "images", tmp_path / "emb"
    photo_tree(images, 3)
    script = tmp_path / "my_script.py"  # re-run by each decode process as it starts: they cannot start
    script.write_text(
        "from extractor.cli import main\n"
        f"main.main(['embed', {str(images)!r}, '-o', {str(out)!r}, '--weights', 'random', "
        "'--no-progress'])\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2]
    )
    assert result.returncode == 1 and "could not start" in result.stderr and "__main__" in result.stderr
    assert read_errors(out).num_rows == 0  # nothing recorded against the files


def test_up_to_date_rerun_finishes_without_loading_tensorflow(tmp_path):
    images, out = tmp_path / "images", tmp_path / "emb"
    photo_tree(images, 3)
    assert embed(str(images), "-o", str(out), *RANDOM)[0] == 0
    script = (
        "import sys\nfrom extractor.cli import main\n"
        f"main.main(['embed', {str(images)!r}, '-o', {str(out)!r}, '--weights', 'random', '--no-progress'],"
        " standalone_mode=False)\nprint('tensorflow loaded:', 'tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "unchanged 3" in result.stdout and "tensorflow loaded: False" in result.stdout


def test_command_exit_codes_and_output_survive_the_fast_exit(tmp_path):
    images, out = tmp_path / "images", tmp_path / "emb"
    photo_tree(images, 3)
    cli = [sys.executable, "-m", "extractor.cli"]
    done = subprocess.run([*cli, "embed", str(images), "-o", str(out), *RANDOM], capture_output=True, text=True)
    assert done.returncode == 0 and "embedded 3" in done.stdout, done.stderr
    not_a_dataset = tmp_path / "empty"
    not_a_dataset.mkdir()
    failed = subprocess.run(
        [*cli, "train", str(not_a_dataset), "-o", str(tmp_path / "head")], capture_output=True, text=True
    )  # fails after TensorFlow has loaded
    assert failed.returncode == 1 and "Error:" in failed.stderr, failed.stderr


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes through Linux /proc")
def test_a_killed_decode_process_costs_nothing(tmp_path):
    images, out = tmp_path / "images", tmp_path / "emb"
    paths = photo_tree(images, 120, size=(640, 480))
    cmd = [sys.executable, "-m", "extractor.cli", "embed", str(images), "-o", str(out), *RANDOM]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    workers: list[int] = []
    while time.time() < deadline and not workers and proc.poll() is None:
        workers = [pid for pid in children(proc.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        time.sleep(0.01)
    assert workers, "no decode worker process was seen"
    os.kill(workers[0], signal.SIGKILL)  # as the out-of-memory killer would
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "embedded 120, unchanged 0, errors 0" in stdout and "decode worker process ended" in stderr
    assert sorted(load_dataset(out, embeddings=False).paths) == sorted(paths)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_worker_count_does_not_change_the_result(tmp_path, workers):
    images = tmp_path / "images"
    photo_tree(images, 5)
    assert embed(str(images), "-o", str(tmp_path / workers), *RANDOM, "--workers", workers)[0] == 0
    data = load_dataset(tmp_path / workers)
    reference = tmp_path / "reference"
    if not reference.exists():
        assert embed(str(images), "-o", str(reference), *RANDOM, "--workers", "1")[0] == 0
    ref = load_dataset(reference)
    order = [ref.paths.index(p) for p in data.paths]
    np.testing.assert_allclose(data.vectors, ref.vectors[order], atol=1e-5)


def test_no_follow_outside_leaves_out_links_leading_out_of_the_folder(tmp_path):
    root, outside = tmp_path / "images", tmp_path / "elsewhere"
    make_photo(root / "cats" / "own.jpg", (64, 48), seed=1)
    make_photo(outside / "secret.jpg", (64, 48), seed=2)
    os.symlink(outside, root / "cats" / "escape")
    code, output = embed(str(root), "-o", str(tmp_path / "kept"), "--no-follow-outside", "--workers", "0", *RANDOM)
    assert code == 0, output
    assert load_dataset(tmp_path / "kept", embeddings=False).paths == ["cats/own.jpg"]
    code, output = embed(str(root), "-o", str(tmp_path / "all"), "--workers", "0", *RANDOM)  # the default follows
    assert code == 0, output
    assert sorted(load_dataset(tmp_path / "all", embeddings=False).paths) == ["cats/escape/secret.jpg", "cats/own.jpg"]


def test_a_float32_dataset_is_extended_by_a_bfloat16_rerun(tmp_path):
    """Precision is not a compatibility setting: a rerun on a machine with bfloat16 adds its rows to a float32
    dataset; each part records the precision its rows were computed in, and the summary says which ran and why."""
    images, out = tmp_path / "images", tmp_path / "emb"
    photo_tree(images, 3)
    code, output = embed(str(images), "-o", str(out), *RANDOM, "--precision", "float32")
    assert code == 0 and "precision float32 (asked for)" in output, output
    make_photo(images / "class1" / "later.jpg", (96, 72), seed=50)
    code, output = embed(str(images), "-o", str(out), *RANDOM, "--precision", "bfloat16")
    assert code == 0 and "embedded 1, unchanged 3, errors 0" in output and "precision bfloat16" in output, output
    recorded = [json.loads(pq.read_schema(part).metadata[b"alexfeat"])["precision"] for part in list_parts(out)]
    assert recorded == ["float32", "bfloat16"]
    data = load_dataset(out, columns=("path",))
    assert len(data.paths) == 4 and data.meta.precision == "bfloat16"  # the newest part's
    np.testing.assert_allclose(np.linalg.norm(data.vectors, axis=1), 1.0, rtol=1e-5)
    # The bfloat16 row is the float32 one to cosine >= 0.9999: recompute it in float32 alone.
    assert embed(str(images), "-o", str(tmp_path / "f32"), *RANDOM, "--precision", "float32")[0] == 0
    again = load_dataset(tmp_path / "f32", columns=("path",))
    later = data.paths.index("class1/later.jpg")
    assert float(data.vectors[later] @ again.vectors[again.paths.index("class1/later.jpg")]) >= 0.9999


def test_auto_precision_is_reported_and_an_unknown_one_refused(tmp_path):
    images = tmp_path / "images"
    photo_tree(images, 1)
    code, output = embed(str(images), "-o", str(tmp_path / "emb"), *RANDOM)
    assert code == 0 and "precision " in output and "(auto: " in output, output
    code, output = embed(str(images), "-o", str(tmp_path / "emb2"), *RANDOM, "--precision", "half")
    assert code == 2 and "'half' is not one of 'auto', 'float32', 'bfloat16'" in output


def test_no_precision_is_reported_when_nothing_ran_through_the_network(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "notes.jpg").write_text("not a photo")
    code, output = embed(str(images), "-o", str(tmp_path / "emb"), *RANDOM)
    assert code == 0 and "embedded 0, unchanged 0, errors 1" in output and "\nprecision " not in output, output


def test_warnings_read_like_the_commands_own_and_verbose_adds_time_and_module(tmp_path):
    (tmp_path / "list.txt").write_text("gone/x.jpg\n")
    cli = [sys.executable, "-m", "extractor.cli"]
    args = ["embed", "--from-list", str(tmp_path / "list.txt"), *RANDOM]
    plain = subprocess.run([*cli, *args, "-o", str(tmp_path / "a")], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and plain.stderr.startswith("warning: skipping gone/x.jpg: listed in the manifest")
    verbose = subprocess.run([*cli, "-v", *args, "-o", str(tmp_path / "b")], capture_output=True, text=True)
    assert verbose.returncode == 0 and " extractor.embed.job WARNING: skipping gone/x.jpg" in verbose.stderr
