"""αQE (``search --expand``) and DBA (``index build --augment``) on small synthetic sets whose neighbour order is
known, through the real index, the Searcher and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
from click.testing import CliRunner

from extractor.cli import main
from extractor.errors import AlexfeatError
from index import cli as index_cli
from index import expansion, ops
from index.build import build_index, build_index_dir
from index.indexdir import open_index_dir
from index.search import Searcher
from index.update import add_to_index, remove_from_index
from tests.index_data import DIM, clustered, paths_for, replace_rows, write_dataset
from tests.storedata import make_meta


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def on_circle(degrees: list[float], dim: int = 4) -> np.ndarray:
    """Unit vectors at these angles in the first plane (the other dimensions zero)."""
    out = np.zeros((len(degrees), dim), np.float32)
    radians = np.radians(degrees)
    out[:, 0], out[:, 1] = np.cos(radians), np.sin(radians)
    return out


def brute_force_weighted(x: np.ndarray, pool: np.ndarray, k: int, alpha: float, skip_self: bool) -> np.ndarray:
    """Independent αQE/DBA: normalise(x + Σ max(s, 0)^α · neighbour) over the top-k of a full similarity matrix."""
    sims = x @ pool.T
    if skip_self:
        np.fill_diagonal(sims, -np.inf)
    out = []
    for row, s in zip(x, sims):
        top = np.argsort(-s, kind="stable")[:k]
        v = row + (np.maximum(s[top], 0) ** alpha)[:, None].T @ pool[top]
        out.append(v.ravel() / np.linalg.norm(v))
    return np.array(out, np.float32)


def test_the_cli_defaults_are_the_modules_defaults() -> None:
    assert (index_cli.DEFAULT_AUGMENT, index_cli.DEFAULT_EXPAND) == (
        expansion.DEFAULT_AUGMENT,
        expansion.DEFAULT_EXPAND,
    )


def test_query_expansion_reorders_neighbours_as_the_formula_says() -> None:
    # query at 0 degrees; A at 10, C at -22, B at 25: raw order A, C, B. Expanded with A (K=1) the query moves
    # to about +5 degrees, where B (20 away) beats C (27 away).
    database = on_circle([10, 25, -22])
    ids = np.array([1, 2, 3])
    built = build_index(database, ids, "Flat", augment=0)
    query = on_circle([0])
    _, raw = ops.search(built.index, query, 3)
    assert raw[0].tolist() == [1, 3, 2]
    expanded = expansion.expand_queries(built.index, query, 1)
    np.testing.assert_allclose(expanded, brute_force_weighted(query, database, 1, expansion.ALPHA, False), atol=1e-6)
    _, found = ops.search(built.index, expanded, 3)
    assert found[0].tolist() == [1, 2, 3]
    assert expansion.expand_queries(built.index, query, 0) is query  # K=0: the query as given


def test_database_augmentation_pulls_an_outlier_away_from_a_tight_cluster() -> None:
    # Z at 20 degrees has its neighbours W at 60-62; the cluster A sits at -25..-27. From the query at 0 the raw
    # order is Z, A1, A2, A3; augmented over 3 neighbours Z moves to about 39 degrees and the A cluster comes first.
    database = on_circle([20, 60, 62, -25, -26, -27])
    ids = np.array([10, 11, 12, 20, 21, 22])
    query = on_circle([0])
    raw = build_index(database, ids, "Flat", augment=0)
    assert ops.search(raw.index, query, 4)[1][0].tolist() == [10, 20, 21, 22]
    augmented = build_index(database, ids, "Flat", augment=3)
    assert ops.search(augmented.index, query, 4)[1][0].tolist() == [20, 21, 22, 10]
    expected = brute_force_weighted(database, database, 2, expansion.ALPHA, skip_self=True)
    np.testing.assert_allclose(ops.reconstruct(augmented.index, ids), expected, atol=1e-6)
    assert (augmented.augment, augmented.alpha) == (3, expansion.ALPHA) and raw.augment == 0


@pytest.mark.parametrize("factory", ["HNSW16", "IVF8,Flat"])
def test_augmentation_uses_the_approximate_index_and_matches_brute_force(factory: str) -> None:
    x = clustered(600, DIM, clusters=6, noise=0.4)
    ids = np.arange(600, dtype=np.int64) * 5 + 3
    built = build_index(x, ids, factory, augment=5)
    expected = brute_force_weighted(x, x, 4, expansion.ALPHA, skip_self=True)
    stored = ops.reconstruct(built.index, ids)
    close = np.abs((stored * expected).sum(axis=1) - 1) < 1e-4
    assert close.mean() > 0.9  # the approximate search finds (nearly) every exact neighbour
    assert built.recall_at_10 >= 0.9  # tuned again on the augmented vectors


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, list[str]]:
    base = tmp_path_factory.mktemp("expansion")
    paths = paths_for(90)
    vectors = clustered(90)
    write_dataset(base / "emb", paths, vectors, meta=make_meta(DIM))
    return base / "emb", vectors, paths


def test_expand_0_on_a_raw_index_gives_faiss_own_results(
    collection: tuple[Path, np.ndarray, list[str]], tmp_path: Path
) -> None:
    emb, vectors, paths = collection
    code, output = run("index", "build", emb, "-o", tmp_path / "idx", "--augment", "0", "--no-progress")
    assert code == 0 and "augmented" not in output, output
    info = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert (info["augment"], info["alpha"]) == (0, expansion.ALPHA)
    code, output = run("search", tmp_path / "idx", "--path", paths[7], "-k", "6", "--expand", "0", "--json")
    assert code == 0, output
    hits = json.loads(output)["results"]
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    scores, rows = flat.search(vectors[7:8], 6)
    assert [h["path"] for h in hits] == [paths[r] for r in rows[0]]
    np.testing.assert_allclose([h["score"] for h in hits], scores[0], atol=1e-5)


def test_expanded_search_by_id_keeps_the_item_first_and_equals_the_formula(
    collection: tuple[Path, np.ndarray, list[str]], tmp_path: Path
) -> None:
    emb, vectors, paths = collection
    build_index_dir(emb, tmp_path / "idx", factory="Flat", augment=0, progress=False)
    searcher = Searcher(tmp_path / "idx")
    result = searcher.search(paths=[paths[4]], k=5, expand=3).results[0]
    assert result.hits[0].path == paths[4] and [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
    others = np.delete(np.arange(len(paths)), 4)
    query = brute_force_weighted(vectors[4:5], vectors[others], 3, expansion.ALPHA, False)  # itself not counted
    order = np.argsort(-(vectors @ query[0]), kind="stable")
    assert [h.path for h in result.hits[1:]] == [paths[i] for i in order if i != 4][:4]
    np.testing.assert_allclose(
        [h.score for h in result.hits], vectors[[4] + [h for h in order if h != 4][:4]] @ query[0], atol=1e-5
    )
    excluded = searcher.search(paths=[paths[4]], k=4, exclude_self=True, expand=3).results[0]
    assert [(h.rank, h.path) for h in excluded.hits] == [(h.rank - 1, h.path) for h in result.hits[1:]]
    raw = searcher.search(paths=[paths[4]], k=5, expand=0).results[0]
    assert raw.hits[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(AlexfeatError, match="expand must be a whole number of neighbours >= 0"):
        searcher.search(paths=[paths[4]], expand=-1)
    with pytest.raises(AlexfeatError, match="augment must be a whole number"):
        build_index_dir(emb, tmp_path / "other", augment=2.5)  # type: ignore[arg-type]
    assert not (tmp_path / "other").exists()
    code, output = run("search", tmp_path / "idx", "--path", paths[4], "--expand", "-1")
    assert code == 2 and "--expand" in output
    code, output = run("index", "build", emb, "-o", tmp_path / "sharded", "--shards", "2", "--augment", "5")
    assert code == 2 and "--augment needs an index built in one piece" in output


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_an_augmented_index_survives_add_replace_and_remove(
    collection: tuple[Path, np.ndarray, list[str]], tmp_path: Path, factory: str
) -> None:
    emb, vectors, paths = collection
    part = tmp_path / "emb"
    write_dataset(part, paths[:60], vectors[:60], meta=make_meta(DIM))
    build_index_dir(part, tmp_path / "idx", factory=factory, augment=4, progress=False)
    before = open_index_dir(tmp_path / "idx")
    write_dataset(part, paths[60:], vectors[60:], meta=make_meta(DIM))
    summary = add_to_index(tmp_path / "idx", part, progress=False)
    assert (summary.added, summary.count) == (30, 90)
    after = open_index_dir(tmp_path / "idx")
    assert (after.info["augment"], after.info["alpha"]) == (4, expansion.ALPHA)
    old_ids, new_ids = before.lookup.ids, after.lookup.ids[~np.isin(after.lookup.ids, before.lookup.ids)]
    old_stored = ops.reconstruct(before.index, old_ids)
    np.testing.assert_allclose(ops.reconstruct(after.index, old_ids), old_stored, atol=1e-6)  # not re-augmented
    # a newcomer is itself plus its 3 nearest stored (augmented) vectors of the index it joined
    rows = after.lookup.positions(new_ids)
    new_raw = np.stack([vectors[paths.index(after.lookup.paths[r])] for r in rows.tolist()])
    expected = brute_force_weighted(new_raw, old_stored, 3, expansion.ALPHA, False)
    close = (ops.reconstruct(after.index, new_ids) * expected).sum(axis=1) > 1 - 1e-4
    assert close.mean() > 0.9 if factory != "Flat" else close.all()
    # a changed image is replaced (a mask-type index is rebuilt, augmented again)
    replace_rows(part, paths[:2], clustered(2, seed=9), meta=make_meta(DIM))
    replaced = add_to_index(tmp_path / "idx", part, progress=False)
    assert replaced.replaced == 2 and open_index_dir(tmp_path / "idx").info["augment"] == 4
    remove_from_index(tmp_path / "idx", paths=[paths[5], paths[70]])
    searcher = Searcher(tmp_path / "idx")
    assert searcher.dir.info["augment"] == 4 and searcher.count == 88
    for query, result in zip(paths[10:20], searcher.search(paths=paths[10:20], k=20).results):
        found = [h.path for h in result.hits]
        assert found[0] == query and paths[5] not in found and paths[70] not in found and len(found) == 20


def test_search_by_image_on_an_augmented_rmac_flip_index_embeds_with_the_recorded_settings(tmp_path: Path) -> None:
    from extractor.network.features import FeatureExtractor
    from tests.imagefiles import make_photo

    paths = [f"class{i % 2}/photo_{i}.jpg" for i in range(6)]
    for i, rel in enumerate(paths):
        make_photo(tmp_path / "images" / rel, (96, 72), seed=i)
    embed = ("embed", tmp_path / "images", "--weights", "random", "--no-progress")
    code, output = run(*embed, "-o", tmp_path / "emb", "--pooling", "rmac", "--tta", "flip")
    assert code == 0 and "pool5/rmac 256-d embeddings, test-time augmentation flip" in output, output
    code, output = run("index", "build", tmp_path / "emb", "-o", tmp_path / "idx")
    assert code == 0 and "augmented over 10 neighbours" in output, output
    info = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert (info["augment"], info["embedding_metadata"]["pooling"], info["embedding_metadata"]["tta"]) == (
        10,
        "rmac",
        "flip",
    )
    code, output = run("search", tmp_path / "idx", "--image", tmp_path / "images" / paths[2], "-k", "6", "--json")
    assert code == 0, output
    hits = json.loads(output)["results"]
    index_dir = open_index_dir(tmp_path / "idx")
    stored = dict(zip(index_dir.lookup.paths, ops.reconstruct(index_dir.index, index_dir.lookup.ids)))
    query_file = [str(tmp_path / "images" / paths[2])]
    same = FeatureExtractor("random", pooling="rmac", tta="flip").embed_images(query_file).values
    plain = FeatureExtractor("random", pooling="rmac").embed_images(query_file).values
    query = Searcher(tmp_path / "idx").expand(same, expansion.DEFAULT_EXPAND)  # the default αQE, as the CLI does
    np.testing.assert_allclose(
        [h["score"] for h in hits], [float(query[0] @ stored[h["path"]]) for h in hits], atol=1e-5
    )
    assert abs(float(plain[0] @ same[0]) - 1) > 1e-4  # the plain settings would give another query vector
    # a dataset made with the plain settings cannot join this index
    code, output = run(*embed, "-o", tmp_path / "plain", "--pooling", "rmac")
    assert code == 0, output
    code, output = run("index", "add", tmp_path / "idx", tmp_path / "plain")
    assert code == 1 and "tta: flip != none" in output, output
