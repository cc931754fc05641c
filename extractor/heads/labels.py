"""Class labels for the rows of an embeddings dataset: its ``label`` column or a CSV file of ``path,label``."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from extractor.errors import AlexfeatError

LABEL_COLUMNS = ("label",)
CSV_COLUMNS = ("path", "label")


@dataclass(frozen=True)
class Labels:
    """One label per dataset row (None: unlabelled) and where they came from."""

    values: list[str | None]
    source: str  # a column name, or the CSV file's path

    @property
    def unlabelled(self) -> int:
        return sum(value is None for value in self.values)


def resolve_labels(spec: str, paths: Sequence[str], column_values: Sequence[str | None] | None) -> Labels:
    """Labels for rows with relative ``paths``: ``spec`` is an existing CSV file or a column name (``label``).

    ``column_values`` are the rows' ``label`` column (needed when ``spec`` names it). Empty labels count as
    unlabelled.
    """
    if os.path.isfile(spec):
        return Labels(read_label_csv(spec, paths), spec)
    if spec in LABEL_COLUMNS:
        if column_values is None:
            raise ValueError("the label column was not read")
        return Labels([value or None for value in column_values], spec)
    hint = " (the file does not exist)" if spec.lower().endswith(".csv") else ""
    raise AlexfeatError(
        f"--labels {spec!r} is neither a CSV file nor a label column{hint}: give "
        f"{' or '.join(LABEL_COLUMNS)} (folder names) or a CSV file with the columns path,label"
    )


def read_label_csv(csv_path: str | os.PathLike[str], paths: Sequence[str]) -> list[str | None]:
    """Labels of ``paths`` from a CSV with a ``path,label`` header; paths the file omits are unlabelled.

    A path the dataset does not hold, a path given twice with different labels, or a file without the two
    columns is an error naming the file and the offending rows.
    """
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [name for name in CSV_COLUMNS if name not in (reader.fieldnames or [])]
            if missing:
                raise AlexfeatError(
                    f"{csv_path}: the first line must name the columns path,label (found "
                    f"{', '.join(reader.fieldnames or []) or 'nothing'})"
                )
            rows = [(line, row["path"], row["label"]) for line, row in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AlexfeatError(f"cannot read label file {csv_path}: {exc}") from exc
    given: dict[str, str] = {}
    for line, path, label in rows:
        path = (path or "").strip().replace(os.sep, "/")
        label = (label or "").strip()
        if not path or not label:
            continue
        if given.setdefault(path, label) != label:
            raise AlexfeatError(f"{csv_path} line {line}: {path!r} is labelled both {given[path]!r} and {label!r}")
    known = set(paths)
    unknown = [path for path in given if path not in known]
    if unknown:
        shown = ", ".join(repr(p) for p in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise AlexfeatError(
            f"{csv_path} names {len(unknown)} path(s) that are not in the embeddings: {shown}. "
            "Paths must be relative to the embedded folder, '/'-separated, as in the dataset's "
            "path column; embed those images first or remove the rows"
        )
    return [given.get(path) for path in paths]
