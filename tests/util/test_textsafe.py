"""CSV cells a spreadsheet never evaluates; plain-text cells that stay on one line."""

from __future__ import annotations

import csv
import io

import pytest

from extractor.util.textsafe import csv_cell, csv_text, text_cell


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_text_that_could_start_a_formula_is_quoted(start: str) -> None:
    assert csv_cell(f'{start}HYPERLINK("http://evil")') == f'\'{start}HYPERLINK("http://evil")'


def test_other_text_and_numbers_are_left_as_they_are() -> None:
    assert csv_cell("cats/a=b.jpg") == "cats/a=b.jpg" and csv_cell("") == ""
    assert csv_cell(-5) == -5 and csv_cell(3) == 3


def test_csv_text_applies_to_every_cell_and_reads_back() -> None:
    text = csv_text(["group", "path"], [[1, "=1+1"], [2, "new\nline.jpg"]])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["group", "path"], ["1", "'=1+1"], ["2", "new\nline.jpg"]]


def test_text_cell_escapes_control_characters_only() -> None:
    assert text_cell("a\nb\tc\rd\x1be\x7f") == "a\\nb\\tc\\rd\\x1be\\x7f"
    assert text_cell("dogs/é😀 x.png") == "dogs/é😀 x.png"
    assert text_cell(None) == "None"
