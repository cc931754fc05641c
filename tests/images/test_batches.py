"""The one decode → batch → model helper: paths or bytes in, a model on uint8 batches, failures beside results."""

from __future__ import annotations

import numpy as np
import pytest

from extractor.images.batches import apply_model, decode_columns, entries_of, entry_columns, map_images
from extractor.images.decode import ResizeSpec, decode_image
from extractor.images.discover import FileEntry, label_of
from extractor.images.file_decoder import FileDecoder
from extractor.store import to_table
from tests.imagefiles import make_photo, make_text_file, make_truncated_jpeg
from tests.storedata import make_meta

RESIZE = ResizeSpec.parse("squash64")


def mean_colour(images: np.ndarray) -> np.ndarray:
    """A tiny real model: the mean RGB of each image, as float32 (n, 3)."""
    return images.reshape(len(images), -1, 3).mean(axis=1).astype(np.float32)


def test_map_images_takes_paths_and_bytes_and_keeps_their_order(tmp_path):
    good = [make_photo(tmp_path / f"p{i}.jpg", (80, 60), seed=i) for i in range(5)]
    bad = make_text_file(tmp_path / "notes.jpg")
    cut = make_truncated_jpeg(tmp_path / "cut.jpg")
    inputs = [good[0], bad, good[1].read_bytes(), str(good[2]), tmp_path / "missing.jpg", cut, good[3], good[4]]
    result = map_images(mean_colour, 3, inputs, RESIZE, batch_size=3, workers=2)
    assert result.indices == [0, 2, 3, 6, 7]
    assert [(i, kind) for i, _, kind, _ in result.failures] == [
        (1, "not_an_image"),
        (4, "unreadable"),
        (5, "truncated"),
    ]
    assert result.failures[0][1] == str(bad) and all(message for *_, message in result.failures)
    expected = mean_colour(np.stack([decode_image(good[i], RESIZE).pixels for i in (0, 1, 2, 3, 4)]))
    np.testing.assert_array_equal(result.values, expected)  # bytes decode exactly like their file


def test_map_images_with_nothing_decodable_never_calls_the_model(tmp_path):
    def model(images: np.ndarray) -> np.ndarray:
        raise AssertionError("called")

    result = map_images(model, 7, [b"", b"not an image"], RESIZE, names=["a", "b"])
    assert result.values.shape == (0, 7) and result.indices == []
    assert [(name, kind) for _, name, kind, _ in result.failures] == [("a", "empty"), ("b", "not_an_image")]


def test_decoded_columns_round_trip_entries_and_become_store_rows(tmp_path):
    from extractor.embed.stages import errors_of, rows_of

    make_photo(tmp_path / "cats" / "a.jpg", (80, 60))
    make_text_file(tmp_path / "b.jpg")
    entries = [
        FileEntry(rel, str(tmp_path / rel), (tmp_path / rel).stat().st_size, 1, label_of(rel))
        for rel in ("cats/a.jpg", "b.jpg")
    ]
    assert entries_of(entry_columns(entries)) == entries
    decoder = FileDecoder(RESIZE)
    columns = apply_model(decode_columns([decoder(e) for e in entries], 64), mean_colour, 3)
    assert "pixels" not in columns and columns["ok"].tolist() == [True, False]
    table = to_table(rows_of(columns), make_meta(dim=3))
    assert table.column("path").to_pylist() == ["cats/a.jpg"] and table.column("label").to_pylist() == ["cats"]
    assert str(table.schema.field("embedding").type) == "fixed_size_list<item: float>[3]"
    (error,) = errors_of(columns)
    assert (error.path, error.error, error.size, error.mtime_ns) == ("b.jpg", "not_an_image", entries[1].size, 1)


def test_to_table_refuses_rows_that_do_not_fit(tmp_path):
    meta = make_meta(dim=3)
    rows = {
        "path": ["a.jpg", "a.jpg"],
        "label": [None, None],
        "sha256": np.zeros((2, 32), np.uint8),
        "size": [1, 1],
        "mtime_ns": [1, 1],
        "width": [1, 1],
        "height": [1, 1],
        "embedding": np.ones((2, 3), np.float32),
    }
    with pytest.raises(ValueError, match="repeat a path"):
        to_table(rows, meta)
    with pytest.raises(ValueError, match=r"\(n, 3\) matrix"):
        to_table({**rows, "path": ["a.jpg", "b.jpg"], "embedding": np.ones((2, 4), np.float32)}, meta)
