"""``alexfeat embed`` from inputs beyond a folder, end to end: an S3 prefix on a real S3-compatible server (moto,
on loopback), manifests, tar shards; and search thumbnails read back through the same source."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from extractor.cli import main
from extractor.store import load_dataset, path_id, read_errors
from tests.imagefiles import make_empty_file, make_photo, make_truncated_jpeg
from tests.sourcedata import jpeg_bytes, make_shard, samples

RANDOM = ["--weights", "random", "--batch-size", "4", "--no-progress", "--workers", "1"]


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def awkward_mirror(root: Path) -> dict[str, str]:
    """A small local tree with awkward names and files; returns the expected error kind of each bad path."""
    make_photo(root / "cats" / "a.jpg", (96, 72), seed=1)
    make_photo(root / "cats" / "b b é.jpg", (96, 72), seed=2)  # spaces and non-ASCII in the key
    make_photo(root / "dogs" / "c.png", (80, 60), seed=3)
    make_truncated_jpeg(root / "dogs" / "cut.jpg")
    make_empty_file(root / "zero.jpg")
    return {"dogs/cut.jpg": "truncated", "zero.jpg": "empty"}


def test_an_s3_prefix_embeds_like_its_local_mirror_and_reruns_from_the_listing(s3_bucket, tmp_path):
    fs, bucket = s3_bucket
    mirror = tmp_path / "mirror"
    bad = awkward_mirror(mirror)
    fs.put(f"{mirror}/", f"{bucket}/photos/", recursive=True)
    url = f"s3://{bucket}/photos"

    code, output = run("embed", url, "-o", tmp_path / "from_s3", *RANDOM)
    assert code == 0, output
    assert "embedded 3, unchanged 0, errors 2" in output
    assert run("embed", mirror, "-o", tmp_path / "local", *RANDOM)[0] == 0
    columns = ("path", "label", "sha256")
    remote, local = load_dataset(tmp_path / "from_s3", columns), load_dataset(tmp_path / "local", columns)
    assert sorted(remote.paths) == ["cats/a.jpg", "cats/b b é.jpg", "dogs/c.png"]
    # the same ids, labels, hashes and embeddings as the local mirror's
    order = np.argsort(remote.ids)
    local_order = np.argsort(local.ids)
    np.testing.assert_array_equal(remote.ids[order], local.ids[local_order])
    assert [remote.labels[i] for i in order] == [local.labels[i] for i in local_order]
    assert [remote.get_sha256()[i] for i in order] == [local.get_sha256()[i] for i in local_order]
    np.testing.assert_allclose(remote.vectors[order], local.vectors[local_order], atol=1e-6)
    assert remote.meta.root == url  # no endpoint, no credentials
    assert {e["path"]: e["error"] for e in read_errors(tmp_path / "from_s3").to_pylist()} == bad

    code, output = run("embed", url, "-o", tmp_path / "from_s3", *RANDOM)
    assert code == 0 and "up to date: unchanged 3 (+2 known errors skipped)" in output, output

    fs.pipe({f"{bucket}/photos/birds/new.jpg": jpeg_bytes(7)})  # added
    changed = bytearray((mirror / "cats" / "a.jpg").read_bytes())
    changed[-3] ^= 0xFF  # the same size, other bytes (and so another ETag)
    fs.pipe({f"{bucket}/photos/cats/a.jpg": bytes(changed)})
    fs.pipe({f"{bucket}/photos/zero.jpg": jpeg_bytes(8)})  # a broken object mended
    code, output = run("embed", url, "-o", tmp_path / "from_s3", *RANDOM)
    assert code == 0 and "embedded 3, unchanged 2, errors 0" in output, output
    again = load_dataset(tmp_path / "from_s3")
    assert sorted(again.paths) == ["birds/new.jpg", "cats/a.jpg", "cats/b b é.jpg", "dogs/c.png", "zero.jpg"]
    assert again.labels[again.paths.index("birds/new.jpg")] == "birds"
    assert {e["path"] for e in read_errors(tmp_path / "from_s3").to_pylist()} == {"dogs/cut.jpg"}


def test_s3_errors_a_user_can_cause_are_one_line(s3_bucket, tmp_path):
    _, bucket = s3_bucket
    code, output = run("embed", "s3://no-such-bucket-anywhere/x", "-o", tmp_path / "out", *RANDOM)
    assert code == 1 and output.startswith("Error: cannot list s3://no-such-bucket-anywhere/x")
    code, output = run("embed", f"s3://{bucket}/empty", "-o", tmp_path / "out", *RANDOM)
    assert code == 1 and "Error: no objects under" in output


def test_a_manifest_embeds_what_it_lists_and_records_missing_files(tmp_path):
    data = tmp_path / "data"
    for i, rel in enumerate(("cats/1.jpg", "cats/2.jpg", "dogs/3.jpg")):
        make_photo(data / rel, (64, 48), seed=i)
    outside = make_photo(tmp_path / "other" / "4.jpg", (64, 48), seed=4)
    with open(data / "list.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(
            [["path", "label"], ["cats/1.jpg", "tabby"], ["dogs/3.jpg", ""], ["cats/gone.jpg", "x"], [outside, "o"]]
        )
    code, output = run("embed", "--from-list", data / "list.csv", "-o", tmp_path / "emb", *RANDOM)
    assert code == 0, output
    assert "embedded 3, unchanged 0, errors 1" in output
    ds = load_dataset(tmp_path / "emb", embeddings=False)
    assert dict(zip(ds.paths, ds.labels)) == {"cats/1.jpg": "tabby", "dogs/3.jpg": "dogs", str(outside): "o"}
    assert ds.meta.root == str(data)
    assert [(e["path"], e["error"]) for e in read_errors(tmp_path / "emb").to_pylist()] == [
        ("cats/gone.jpg", "missing")
    ]
    # the same files listed from elsewhere with --root: the same ids, nothing to do
    (tmp_path / "list.txt").write_text("cats/1.jpg\ndogs/3.jpg\n", encoding="utf-8")
    code, output = run("embed", "--from-list", tmp_path / "list.txt", "--root", data, "-o", tmp_path / "emb", *RANDOM)
    assert code == 0 and "up to date: unchanged 2" in output, output
    # the missing file appears: embedded, its record gone
    make_photo(data / "cats" / "gone.jpg", (64, 48), seed=9)
    code, output = run("embed", "--from-list", data / "list.csv", "-o", tmp_path / "emb", *RANDOM)
    assert code == 0 and "embedded 1, unchanged 3, errors 0" in output, output
    assert read_errors(tmp_path / "emb").num_rows == 0


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give SOURCE"),
        (["somewhere", "--from-list", "l.txt"], "give SOURCE"),
        (["somewhere", "--root", "r"], "--root only applies with --from-list"),
    ],
)
def test_embed_input_usage_errors(tmp_path, args, message):
    code, output = run("embed", *args, "-o", tmp_path / "out", *RANDOM)
    assert code == 2 and message in output
    code, output = run("embed", "--from-list", tmp_path / "absent.csv", "-o", tmp_path / "out", *RANDOM)
    assert code == 1 and output.startswith("Error: the manifest") and "does not exist" in output


def test_tar_shards_embed_each_member_and_a_truncated_shard_does_not_stop_the_job(tmp_path):
    shards = tmp_path / "shards"
    make_shard(shards / "00000.tar", samples(0, 3))
    whole = make_shard(tmp_path / "whole.tar", samples(3, 3)).read_bytes()
    (shards / "00001.tar").write_bytes(whole[: whole.index(jpeg_bytes(4)) + 200])  # cut inside its 2nd image
    make_shard(shards / "00002.tar", {**samples(6, 2), "broken.jpg": b"\xff\xd8 not a jpeg"})
    pattern = str(shards / "{00000..00002}.tar")

    code, output = run("embed", pattern, "-o", tmp_path / "emb", *RANDOM)
    assert code == 0, output
    assert "embedded 6, unchanged 0, errors 3" in output
    ds = load_dataset(tmp_path / "emb", embeddings=False)
    assert sorted(ds.paths) == sorted(
        ["00000.tar/s0000.jpg", "00000.tar/s0001.jpg", "00000.tar/s0002.jpg", "00001.tar/s0003.jpg"]
        + ["00002.tar/s0006.jpg", "00002.tar/s0007.jpg"]
    )
    assert dict(zip(ds.paths, ds.labels))["00000.tar/s0001.jpg"] == "dog"  # from s0001.cls
    assert list(ds.ids) == [path_id(p) for p in ds.paths] and ds.meta.root == str(shards)
    errors = {e["path"]: e["error"] for e in read_errors(tmp_path / "emb").to_pylist()}
    assert errors == {
        "00001.tar": "truncated",
        "00001.tar/s0004.jpg": "truncated",
        "00002.tar/broken.jpg": "not_an_image",
    }

    code, output = run("embed", shards, "-o", tmp_path / "emb", *RANDOM)  # the folder of shards: the same dataset
    assert code == 0 and "embedded 0, unchanged 6, errors 1" in output and "(+2 known errors skipped)" in output

    make_shard(shards / "00001.tar", samples(3, 3))  # the shard copied again, whole
    code, output = run("embed", pattern, "-o", tmp_path / "emb", *RANDOM)
    assert code == 0 and "embedded 2, unchanged 6, errors 0 (+1 known errors skipped)" in output, output
    assert set(read_errors(tmp_path / "emb").column("path").to_pylist()) == {"00002.tar/broken.jpg"}


def test_search_html_reads_thumbnails_through_the_source_and_says_when_it_cannot(s3_bucket, tmp_path):
    fs, bucket = s3_bucket
    awkward_mirror(tmp_path / "mirror")
    fs.put(f"{tmp_path / 'mirror'}/", f"{bucket}/photos/", recursive=True)
    assert run("embed", f"s3://{bucket}/photos", "-o", tmp_path / "emb", *RANDOM)[0] == 0
    assert run("index", "build", tmp_path / "emb", "-o", tmp_path / "idx")[0] == 0
    page = tmp_path / "page.html"
    code, output = run("search", tmp_path / "idx", "--path", "cats/b b é.jpg", "-k", "3", "--html", page)
    assert code == 0, output
    assert len(re.findall(r'<img src="data:image/jpeg;base64,', page.read_text())) == 1 + 3

    fs.rm(f"{bucket}/photos/cats/a.jpg")  # gone from the store since: a placeholder and a note, not a failure
    code, output = run("search", tmp_path / "idx", "--path", "cats/b b é.jpg", "-k", "3", "--html", page)
    assert code == 0 and "1 of 3 images could not be read from s3://" in output, output
    assert page.read_text().count('class="missing"') == 1

    # alexfeat serve's thumbnails come through the same source (here its Python path, the service the HTTP API calls)
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from index.serve.service import NotFound, SearchService, ServeConfig

    service = SearchService(ServeConfig(tmp_path / "idx"))
    try:
        lookup = service.searcher.dir.lookup
        ids = dict(zip(lookup.paths, lookup.ids.tolist()))
        jpeg = service.thumbnail(ids["cats/b b é.jpg"], 64)
        assert jpeg[:2] == b"\xff\xd8"
        with pytest.raises(NotFound, match="cannot be read from s3://"):
            service.thumbnail(ids["cats/a.jpg"], 64)
    finally:
        service.close()

    # the same page from the local mirror, named with --images-root
    code, output = run(
        "search",
        tmp_path / "idx",
        "--path",
        "cats/a.jpg",
        "-k",
        "3",
        "--html",
        page,
        "--images-root",
        tmp_path / "mirror",
    )
    assert code == 0 and "could not be read" not in output and 'class="missing"' not in page.read_text()


def test_the_python_api_takes_a_source_object(tmp_path):
    from extractor.embed.job import EmbedJob
    from extractor.images.sources import TarShardSource
    from extractor.network.features import FeatureExtractor

    make_shard(tmp_path / "shards" / "0.tar", samples(0, 2))
    source = TarShardSource(str(tmp_path / "shards" / "0.tar"))
    job = EmbedJob(source, str(tmp_path / "emb"), FeatureExtractor("random"), batch_size=4, workers=0, progress=False)
    summary = job.run()
    assert (summary.embedded, summary.errors) == (2, 0)
    assert load_dataset(tmp_path / "emb", embeddings=False).labels == ["cat", "dog"]


def test_the_ray_engine_reads_tar_members_and_their_labels_through_the_same_entries(tmp_path, ray_instance):
    shards = tmp_path / "shards"
    make_shard(shards / "0.tar", {**samples(0, 3), "bad.jpg": b"no image"})
    for engine in ("local", "ray"):
        code, output = run("embed", shards, "-o", tmp_path / engine, *RANDOM, "--engine", engine)
        assert code == 0 and "embedded 3, unchanged 0, errors 1" in output, output
    columns = ("path", "label", "sha256")
    local, ray = (load_dataset(tmp_path / engine, columns) for engine in ("local", "ray"))
    assert sorted(zip(ray.paths, ray.labels)) == sorted(zip(local.paths, local.labels))
    assert sorted(ray.get_sha256()) == sorted(local.get_sha256())
    assert read_errors(tmp_path / "ray").to_pylist() == read_errors(tmp_path / "local").to_pylist()
