"""``alexfeat embed --engine ray`` on a real local Ray instance: the same dataset as the local engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extractor.store import load_dataset, read_errors, read_meta
from tests.embed.test_embed import RANDOM, embed, photo_tree
from tests.imagefiles import make_awkward_tree, make_photo

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def awkward(tmp_path_factory, ray_instance):
    """An awkward tree embedded by both engines (truncated, not an image, EXIF-rotated, every mode...)."""
    root = tmp_path_factory.mktemp("ray")
    tree = make_awkward_tree(root / "images")
    for engine in ("local", "ray"):
        code, output = embed(str(tree.root), "-o", str(root / engine), *RANDOM, "--engine", engine)
        assert code == 0, output
        assert f"embedded {len(tree.good)}, unchanged 0, errors {len(tree.errors)}" in output
    return tree, root / "local", root / "ray"


def test_ray_engine_gives_the_local_engines_rows_errors_and_metadata(awkward):
    tree, local_dir, ray_dir = awkward
    columns = ("id", "path", "label", "sha256", "size", "mtime_ns", "width", "height")
    local, ray = (load_dataset(d, columns=columns) for d in (local_dir, ray_dir))
    order_l, order_r = np.argsort(local.ids), np.argsort(ray.ids)
    np.testing.assert_array_equal(local.ids[order_l], ray.ids[order_r])
    assert sorted(ray.paths) == sorted(tree.good) and "cats/sideways.jpg" in ray.paths
    assert np.abs(local.vectors[order_l] - ray.vectors[order_r]).max() <= 1e-5
    for name in ("sha256", "labels", "paths"):
        assert [getattr(local, name)[i] for i in order_l] == [getattr(ray, name)[i] for i in order_r]
    for name in ("size", "mtime_ns", "width", "height"):
        np.testing.assert_array_equal(getattr(local, name)[order_l], getattr(ray, name)[order_r])
    assert read_meta(ray_dir) == read_meta(local_dir)
    ray_errors = {e["path"]: (e["error"], e["size"]) for e in read_errors(ray_dir).to_pylist()}
    assert ray_errors == {e["path"]: (e["error"], e["size"]) for e in read_errors(local_dir).to_pylist()}
    assert {p: kind for p, (kind, _) in ray_errors.items()} == tree.errors
    # Ray's tensor extension type must not leak into the files: the embedding stays a fixed-size list.
    schema = pq.read_schema(next(ray_dir.glob("part-*.parquet")))
    assert schema.field("embedding").type == pa.list_(pa.float32(), 256)
    assert schema == pq.read_schema(next(local_dir.glob("part-*.parquet")))


def test_ray_rerun_embeds_only_new_files_and_prunes(awkward, tmp_path):
    tree, _, ray_dir = awkward
    make_photo(tree.root / "cats" / "new one.jpg", (120, 90), seed=11)
    (tree.root / "dogs" / "gray.png").unlink()
    code, output = embed(str(tree.root), "-o", str(ray_dir), *RANDOM, "--engine", "ray", "--prune")
    assert code == 0, output
    assert f"embedded 1, unchanged {len(tree.good) - 1}, errors 0 (+{len(tree.errors)} known errors" in output
    paths = load_dataset(ray_dir, embeddings=False).paths
    assert "cats/new one.jpg" in paths and "dogs/gray.png" not in paths
    code, output = embed(str(tree.root), "-o", str(ray_dir), *RANDOM, "--engine", "ray")
    assert code == 0 and "up to date: unchanged" in output, output  # Ray is not even asked


def test_ray_engine_on_a_plain_folder_with_several_parts(tmp_path, ray_instance):
    paths = photo_tree(tmp_path / "images", 10)
    out = tmp_path / "emb"
    code, output = embed(str(tmp_path / "images"), "-o", str(out), *RANDOM, "--engine", "ray", "--rows-per-part", "4")
    assert code == 0, output
    assert sorted(load_dataset(out, embeddings=False).paths) == sorted(paths)
    assert len(list(out.glob("part-*.parquet"))) == 3 and not list(out.glob(".*.tmp"))


def test_ray_options_need_the_ray_engine(tmp_path):
    (tmp_path / "images").mkdir()
    result = embed_exit(str(tmp_path / "images"), "-o", str(tmp_path / "emb"), "--address", "auto")
    assert result[0] == 2 and "--address only apply with --engine ray" in result[1]


def embed_exit(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from extractor.cli import main

    result = CliRunner().invoke(main, ["embed", *args])
    return result.exit_code, result.output


def test_engine_ray_without_ray_says_how_to_install(tmp_path):
    make_photo(tmp_path / "images" / "a.jpg", (64, 48))
    code = (
        "import sys; sys.modules['ray'] = None\n"  # what Python does when a package is not installed
        "from extractor.cli import run\n"
        f"sys.argv = ['alexfeat', 'embed', {str(tmp_path / 'images')!r}, '-o', {str(tmp_path / 'emb')!r}, "
        "'--weights', 'random', '--engine', 'ray']\n"
        "run()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "pip install 'alexfeat[ray]'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "emb").exists()
