"""extractor.images.sources: listing and reading folders, manifests, tar shards and an S3 prefix (real files, a real
S3-compatible server on loopback), and reading stored keys back."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extractor.errors import AlexfeatError
from extractor.images.sources import (
    FolderSource,
    ManifestSource,
    ObjectStoreSource,
    SourceError,
    TarShardSource,
    change_token,
    expand_braces,
    open_source,
    public_url,
    read_entries,
    read_stored,
)
from tests.imagefiles import make_photo
from tests.sourcedata import jpeg_bytes, make_shard, samples


def listed(source, errors=None):
    return list(source.list(None if errors is None else lambda key, exc: errors.append((key, exc))))


def test_brace_expansion_keeps_zero_padding_and_takes_products():
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_braces("{3..1}") == ["3", "2", "1"] and expand_braces("plain.tar") == ["plain.tar"]


def test_open_source_picks_the_source_from_what_is_given(tmp_path):
    make_photo(tmp_path / "photos" / "a.jpg", (32, 24))
    make_shard(tmp_path / "shards" / "0.tar", samples(0, 1))
    assert isinstance(open_source(tmp_path / "photos"), FolderSource)
    assert isinstance(open_source(tmp_path / "shards"), TarShardSource)  # a folder of .tar files
    assert isinstance(open_source(str(tmp_path / "shards" / "{0..0}.tar")), TarShardSource)
    assert isinstance(open_source("s3://bucket/prefix"), ObjectStoreSource)  # nothing is contacted yet
    (tmp_path / "list.txt").write_text("photos/a.jpg\n", encoding="utf-8")
    assert isinstance(open_source(from_list=str(tmp_path / "list.txt")), ManifestSource)
    with pytest.raises(AlexfeatError, match="does not exist"):
        open_source(tmp_path / "nope")
    with pytest.raises(AlexfeatError, match="no tar shards match"):
        open_source(str(tmp_path / "shards" / "*.tar").replace("shards", "none"))
    with pytest.raises(AlexfeatError, match="not both"):
        open_source(tmp_path / "photos", from_list="list.txt")


def test_credentials_never_reach_the_recorded_root():
    assert public_url("s3://key:secret@bucket/prefix?X-Amz-Signature=abc") == "s3://bucket/prefix"
    assert ObjectStoreSource("s3://key:secret@bucket/prefix/").root == "s3://bucket/prefix"


def test_change_token_is_the_time_to_the_second_and_changes_with_the_etag():
    from datetime import datetime, timezone

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    a = change_token({"LastModified": when, "ETag": '"aaa"'})
    b = change_token({"LastModified": when, "ETag": '"bbb"'})
    assert a != b and a // 10**9 == b // 10**9 == int(when.timestamp())
    assert change_token({"updated": "2026-01-02T03:04:05Z", "generation": "7"}) // 10**9 == int(when.timestamp())


def test_a_text_manifest_resolves_relative_paths_and_records_missing_files(tmp_path):
    make_photo(tmp_path / "data" / "cats" / "a.jpg", (32, 24), seed=1)
    outside = make_photo(tmp_path / "elsewhere" / "b.jpg", (32, 24), seed=2)
    manifest = tmp_path / "data" / "list.txt"
    manifest.write_text(f"# photos\ncats/a.jpg\n\n{outside}\ncats/gone.jpg\ncats/a.jpg\n", encoding="utf-8")
    errors: list = []
    entries = listed(ManifestSource(str(manifest)), errors)
    assert [(e.path, e.label) for e in entries] == [("cats/a.jpg", "cats"), (str(outside), None)]
    assert entries[0].abs_path == str(tmp_path / "data" / "cats" / "a.jpg")
    assert [(key, exc.kind) for key, exc in errors] == [("cats/gone.jpg", "missing")]
    assert ManifestSource(str(manifest)).root == str(tmp_path / "data")
    # --root: relative paths resolve there instead, and the root is what is recorded
    (tmp_path / "list2.txt").write_text("cats/a.jpg\n", encoding="utf-8")
    (entry,) = listed(ManifestSource(str(tmp_path / "list2.txt"), str(tmp_path / "data")))
    assert entry.path == "cats/a.jpg" and Path(entry.abs_path).is_file()


def test_csv_and_parquet_manifests_take_labels_from_their_label_column(tmp_path):
    for i, name in enumerate(("x/1.jpg", "x/2.jpg")):
        make_photo(tmp_path / name, (32, 24), seed=i)
    with open(tmp_path / "list.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["label", "path"], ["tabby", "x/1.jpg"], ["", "x/2.jpg"]])
    assert [(e.path, e.label) for e in listed(ManifestSource(str(tmp_path / "list.csv")))] == [
        ("x/1.jpg", "tabby"),
        ("x/2.jpg", "x"),  # no label given: the first folder, as for a folder
    ]
    pq.write_table(pa.table({"path": ["x/2.jpg", "x/1.jpg"], "label": ["b", None]}), tmp_path / "list.parquet")
    assert [(e.path, e.label) for e in listed(ManifestSource(str(tmp_path / "list.parquet")))] == [
        ("x/2.jpg", "b"),
        ("x/1.jpg", "x"),
    ]
    (tmp_path / "bad.csv").write_text("file,label\nx/1.jpg,a\n", encoding="utf-8")
    with pytest.raises(AlexfeatError, match="no 'path' column"):
        listed(ManifestSource(str(tmp_path / "bad.csv")))
    with pytest.raises(AlexfeatError, match="absent.txt does not exist"):
        ManifestSource(str(tmp_path / "absent.txt"))


def test_tar_shards_list_members_with_webdataset_labels_and_read_their_exact_bytes(tmp_path):
    first = make_shard(tmp_path / "shards" / "00000.tar", samples(0, 3))
    make_shard(tmp_path / "shards" / "00001.tar", {"sub/z.png": b"not really", ".hidden.jpg": b"", "notes.md": b"x"})
    source = TarShardSource(str(tmp_path / "shards" / "{00000..00001}.tar"))
    assert source.root == str(tmp_path / "shards")
    entries = listed(source)
    assert [(e.path, e.label) for e in entries] == [
        ("00000.tar/s0000.jpg", "cat"),
        ("00000.tar/s0001.jpg", "dog"),
        ("00000.tar/s0002.jpg", "cat"),
        ("00001.tar/sub/z.png", None),
    ]
    assert {e.mtime_ns for e in entries[:3]} == {first.stat().st_mtime_ns}  # the shard's change token
    assert read_entries(entries) == [jpeg_bytes(0), jpeg_bytes(1), jpeg_bytes(2), b"not really"]
    assert [e.path for e in listed(TarShardSource(str(tmp_path / "shards")))] == [e.path for e in entries]
    # read back by stored key, as thumbnails are
    assert read_stored(source.root, ["00000.tar/s0001.jpg", "00001.tar/sub/z.png"]) == [jpeg_bytes(1), b"not really"]


def test_a_truncated_shard_keeps_what_precedes_the_cut_and_records_the_rest(tmp_path):
    whole = make_shard(tmp_path / "whole.tar", samples(0, 4)).read_bytes()
    cut = tmp_path / "shards" / "cut.tar"
    cut.parent.mkdir()
    third = whole.index(jpeg_bytes(2))
    cut.write_bytes(whole[: third + 100])  # inside the third image
    make_shard(tmp_path / "shards" / "fine.tar", samples(10, 1))
    (tmp_path / "shards" / "junk.tar").write_bytes(b"this is no tar file " * 40)
    errors: list = []
    entries = listed(TarShardSource(str(tmp_path / "shards" / "*.tar")), errors)
    assert [e.path for e in entries] == [
        "cut.tar/s0000.jpg",
        "cut.tar/s0001.jpg",
        "cut.tar/s0002.jpg",
        "fine.tar/s0010.jpg",
    ]
    data = read_entries(entries)
    assert data[:2] == [jpeg_bytes(0), jpeg_bytes(1)] and data[3] == jpeg_bytes(10)
    assert isinstance(data[2], SourceError) and data[2].kind == "truncated"
    assert [(key, exc.kind) for key, exc in errors] == [("cut.tar", "truncated"), ("junk.tar", "corrupt")]
    assert "after member 's0002.jpg'" in errors[0][1].message
    # cut exactly between two members: no end-of-archive block, so still a truncated shard
    boundary = tmp_path / "boundary" / "b.tar"
    boundary.parent.mkdir()
    boundary.write_bytes(whole[: whole.index(b"s0002.jpg")])
    errors = []
    assert len(listed(TarShardSource(str(boundary)), errors)) == 2
    assert [(key, exc.kind) for key, exc in errors] == [("b.tar", "truncated")]


def test_a_brace_pattern_records_shards_that_do_not_exist(tmp_path):
    make_shard(tmp_path / "0.tar", samples(0, 1))
    errors: list = []
    entries = listed(TarShardSource(str(tmp_path / "{0..1}.tar")), errors)
    assert [e.path for e in entries] == ["0.tar/s0000.jpg"]
    assert [(key, exc.kind) for key, exc in errors] == [("1.tar", "missing")]


def test_an_s3_prefix_lists_like_a_folder_and_reads_concurrently(s3_bucket, tmp_path):
    fs, bucket = s3_bucket
    fs.pipe(
        {
            f"{bucket}/photos/cats/a b é.jpg": jpeg_bytes(1),
            f"{bucket}/photos/top.png": b"png?",
            f"{bucket}/photos/.hidden/x.jpg": b"",
            f"{bucket}/photos/notes.txt": b"no image",
            f"{bucket}/photos-other/c.jpg": b"not under the prefix",
        }
    )
    source = ObjectStoreSource(f"s3://{bucket}/photos")
    entries = listed(source)
    assert [(e.path, e.label, e.size) for e in entries] == [
        ("cats/a b é.jpg", "cats", len(jpeg_bytes(1))),
        ("top.png", None, 4),
    ]
    assert entries[0].abs_path == f"s3://{bucket}/photos/cats/a b é.jpg"
    assert read_entries(entries) == [jpeg_bytes(1), b"png?"]
    assert read_stored(source.root, ["cats/a b é.jpg", "gone.jpg"])[0] == jpeg_bytes(1)
    assert isinstance(read_stored(source.root, ["gone.jpg"])[0], FileNotFoundError)
    before = entries[1].mtime_ns
    fs.pipe({f"{bucket}/photos/top.png": b"PNG!"})  # same size, same second maybe: the ETag tells
    assert listed(source)[1].mtime_ns != before
    with pytest.raises(AlexfeatError, match="no objects under"):
        listed(ObjectStoreSource(f"s3://{bucket}/typo"))
    with pytest.raises(AlexfeatError, match="cannot list s3://no-such-bucket-here"):
        listed(ObjectStoreSource("s3://no-such-bucket-here/photos"))


def test_folder_source_records_an_absolute_root(tmp_path, monkeypatch):
    make_photo(tmp_path / "a.jpg", (32, 24))
    monkeypatch.chdir(tmp_path)
    source = FolderSource(".")
    assert source.root == str(tmp_path) and [e.path for e in listed(source)] == ["a.jpg"]
    assert read_stored(source.root, ["a.jpg"]) == [(tmp_path / "a.jpg").read_bytes()]
    assert isinstance(read_stored(source.root, ["gone.jpg"])[0], FileNotFoundError)
    assert os.path.isabs(source.root)


def test_an_unreachable_store_gives_each_image_an_error_and_a_listing_one_line(s3_endpoint, monkeypatch):
    import socket

    import s3fs

    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()  # file systems are cached with their endpoint
    try:
        results = read_stored("s3://bucket/photos", ["a.jpg", "b.jpg"])
        assert all(isinstance(r, OSError) and "Could not connect" in str(r) for r in results)
        with pytest.raises(AlexfeatError, match="cannot list s3://bucket/photos .*AWS_ENDPOINT_URL"):
            listed(ObjectStoreSource("s3://bucket/photos"))
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
