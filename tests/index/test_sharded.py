"""``alexfeat index build --shards N``: trained once, shards added independently, merged on disk."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from extractor.cli import main
from index import ops
from index.build import build_index_dir
from index.indexdir import IVFDATA_FILE, open_index_dir
from index.search import Searcher
from index.sharded import build_sharded_index_dir, plan_shards
from tests.index_data import clustered, paths_for, write_dataset

N, FACTORY = 3000, "IVF32,Flat"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    vectors = clustered(N, seed=3)
    ids = write_dataset(root / "emb", paths_for(N), vectors, rows_per_part=500)
    one = build_index_dir(root / "emb", root / "one", FACTORY, augment=0).info  # sharded builds store raw vectors
    code, output = run("index", "build", root / "emb", "-o", root / "sharded", "--factory", FACTORY, "--shards", 3)
    assert code == 0, output
    assert "in 3 shards merged on disk" in output
    return root, vectors, ids, one


def test_plan_shards_splits_parts_into_balanced_runs():
    assert plan_shards([("a", 10), ("b", 10), ("c", 10), ("d", 10)], 2) == [["a", "b"], ["c", "d"]]
    assert plan_shards([("a", 10)], 4) == [["a"]]
    assert [len(g) for g in plan_shards([(str(i), 5) for i in range(10)], 3)] == [4, 3, 3]


def test_sharded_build_returns_the_one_shot_builds_neighbours(built):
    root, vectors, ids, one = built
    info = json.loads((root / "sharded" / "index.json").read_text())
    assert set(one) <= set(info) and info["storage"] == "ondisk" and info["shards"] == 3
    assert info["factory"] == one["factory"] and info["count"] == one["count"] == N
    assert info["search_params"] == one["search_params"] and info["recall_at_10"] == one["recall_at_10"]
    queries = vectors[::37]
    a = Searcher(root / "one").search_vectors(queries, 10)
    b = Searcher(root / "sharded").search_vectors(queries, 10)
    assert [[h.id for h in hits] for hits in a] == [[h.id for h in hits] for hits in b]
    np.testing.assert_allclose([[h.score for h in hits] for hits in a], [[h.score for h in hits] for hits in b])
    assert not list((root / "sharded").glob(".shards*"))  # the work files are gone


def test_moved_sharded_index_still_loads_and_searches_by_id(built, tmp_path):
    root, vectors, ids, _ = built
    moved = tmp_path / "elsewhere"
    shutil.copytree(root / "sharded", moved)
    searcher = Searcher(moved)
    assert searcher.dir.index.ntotal == N and (moved / IVFDATA_FILE).exists()
    result = searcher.search_ids([int(ids[5])], k=3)[0]
    assert result.hits[0].id == int(ids[5])


def test_sharded_index_refuses_add_and_masks_removals(built, tmp_path):
    root, _, ids, _ = built
    copy = tmp_path / "idx"
    shutil.copytree(root / "sharded", copy)
    code, output = run("index", "add", copy, root / "emb")
    assert code == 1 and "read-only" in output and "--shards 3" in output
    code, output = run("index", "remove", copy, "--id", int(ids[0]))
    assert code == 0, output
    reopened = open_index_dir(copy)
    assert int(ids[0]) in reopened.masked.tolist() and len(reopened.lookup) == N - 1
    hits = Searcher(copy).search_vectors(ops.reconstruct(reopened.index, [int(ids[0])]), N)[0]
    assert int(ids[0]) not in [h.id for h in hits]


def test_shards_below_the_ivf_threshold_and_with_exact_factories(built, tmp_path):
    root, _, _, _ = built
    info = build_sharded_index_dir(root / "emb", tmp_path / "auto", 4).info  # 3,000 vectors: auto is exact
    assert info["factory"] == "IDMap2,Flat" and info.get("storage") is None
    assert not (tmp_path / "auto" / IVFDATA_FILE).exists()
    code, output = run("index", "build", root / "emb", "-o", tmp_path / "hnsw", "--factory", "HNSW16", "--shards", 2)
    assert code == 1 and "--shards needs an inverted file" in output
    code, output = run("index", "build", root / "emb", "-o", tmp_path / "x", "--engine", "ray")
    assert code == 2 and "only apply with --shards" in output


def test_sharded_build_on_ray_gives_the_same_index(built, ray_instance, tmp_path):
    root, vectors, _, _ = built
    info = build_sharded_index_dir(root / "emb", tmp_path / "ray", 2, FACTORY, engine="ray").info
    assert info["engine"] == "ray" and info["shards"] == 2
    queries = vectors[::101]
    a = Searcher(root / "sharded").search_vectors(queries, 10)
    b = Searcher(tmp_path / "ray").search_vectors(queries, 10)
    assert [[h.id for h in hits] for hits in a] == [[h.id for h in hits] for hits in b]
