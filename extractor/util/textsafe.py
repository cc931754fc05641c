"""Text that other programs open safely: CSV cells a spreadsheet will not run, table cells that stay on one line.

- ``csv_cell``: a text cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return is prefixed with
  ``'`` (OWASP's advice against CSV injection: a file named ``=HYPERLINK(...)`` must not become a live formula).
  Numbers are left as they are. JSON outputs are never changed: they carry the exact names.
- ``text_cell``: control characters in a name (newline, tab, carriage return, ...) are written as ``\\n``, ``\\t``,
  ``\\r`` or ``\\xNN``, so one row of a plain-text table stays one line with the columns it should have.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_CONTROL = {c: _ESCAPES.get(chr(c), f"\\x{c:02x}") for c in [*range(0x20), 0x7F]}


def csv_cell(value: object) -> object:
    """``value`` as a CSV cell no spreadsheet evaluates: text that could start a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A CSV document (``\\n`` line ends) of ``header`` and ``rows``, every cell passed through ``csv_cell``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([csv_cell(cell) for cell in header])
    writer.writerows([csv_cell(cell) for cell in row] for row in rows)
    return buffer.getvalue()


def text_cell(value: object) -> str:
    """``str(value)`` with control characters escaped (``\\n``, ``\\t``, ``\\r``, ``\\xNN``): one line, no tabs."""
    return str(value).translate(_CONTROL)
