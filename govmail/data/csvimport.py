"""Reading an HR spreadsheet's CSV for `govmail import`: every cell is hostile until checked.

`read_people(path)` returns the rows (name, agency, role, department) with their line numbers, the
problems that refuse a row, and the warnings of what was cleaned. A cell is cleaned (with a
warning) of what a spreadsheet adds by accident: spaces at either end, runs of spaces, no-break
spaces. A cell is refused (its row gets no entry) when it holds a line break or another control
character, quotes, markup or a formula (`=`, `+`, `-`, `@` first: a spreadsheet would run it when
the file is opened again), a backslash, or more than 100 characters; a file that is not UTF-8, a
NUL byte, more than 100,000 rows or 20 MiB is refused whole with one message.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from pathlib import Path

from .text import CONTROL_RE

FIELDS = ("name", "agency", "role", "department")
HEADERS = ("name", "full name", "họ và tên", "ho va ten")
MAX_BYTES = 20 * 1024 * 1024
MAX_ROWS = 100_000
MAX_CELL = 100
_FORBIDDEN = re.compile(r"[\"<>\\`{}\[\]|;$%#&*^~]")
_NAME = re.compile(r"^[^\W\d_]+(?:[ '.\-][^\W\d_]+)*\.?\Z")


class CsvError(Exception):
    """The file as a whole cannot be read (one message, with its line where known)."""


def _clean(cell: str, where: str, warnings: list[str]) -> tuple[str | None, str | None]:
    """(cleaned cell, None) or (None, why it is refused)."""
    m = CONTROL_RE.search(cell.replace("\u00a0", " "))
    if m:
        what = "a line break" if m.group() in "\r\n\u2028\u2029" else f"the control character U+{ord(m.group()):04X}"
        return None, f"{where}: holds {what}; a cell is one line of text"
    cleaned = re.sub(r"\s+", " ", cell.replace("\u00a0", " ")).strip()
    cleaned = unicodedata.normalize("NFC", cleaned)
    if cleaned != cell and cleaned != unicodedata.normalize("NFC", cell):
        warnings.append(f"{where}: spaces cleaned: {cell!r} -> {cleaned!r}")
    if len(cleaned) > MAX_CELL:
        return None, f"{where}: {len(cleaned)} characters; a cell is at most {MAX_CELL}"
    if cleaned[:1] in ("=", "+", "-", "@"):
        return None, f"{where}: {cleaned[:40]!r} starts like a spreadsheet formula; refused"
    bad = _FORBIDDEN.search(cleaned)
    if bad:
        return None, f"{where}: {cleaned[:40]!r} holds {bad.group()!r} (quotes, markup and symbols are refused)"
    return cleaned, None


def read_people(path: str | Path) -> tuple[list[tuple[int, dict]], list[str], list[str]]:
    p = Path(path)
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise CsvError(f"{p}: {size:,} bytes; an import file is at most {MAX_BYTES:,} bytes")
    raw = p.read_bytes()
    if b"\0" in raw:
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise CsvError(f"{p}:{line}: holds a NUL byte; not a CSV text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CsvError(f"{p}:{line}: not UTF-8 text (save the spreadsheet as 'CSV UTF-8')") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows, problems, warnings = [], [], []
    try:
        for cells in reader:
            line = reader.line_num
            if len(rows) >= MAX_ROWS:
                raise CsvError(f"{p}:{line}: more than {MAX_ROWS:,} rows; split the file")
            if not any(c.strip() for c in cells):
                continue
            if not rows and not problems and cells[0].strip().lower() in HEADERS:
                continue
            if len(cells) > len(FIELDS):
                extra = [c for c in cells[len(FIELDS):] if c.strip()]
                if extra:
                    problems.append(f"{p}:{line}: {len(cells)} columns; expected at most {len(FIELDS)} "
                                    f"({', '.join(FIELDS)})")
                    continue
            row, refused = {}, False
            for field, cell in zip(FIELDS, cells, strict=False):
                value, why = _clean(cell, f"{p}:{line}: column {field}", warnings)
                if why:
                    problems.append(why)
                    refused = True
                    break
                row[field] = value
            if refused:
                continue
            name = row.get("name", "")
            if name and not _NAME.match(name):
                problems.append(f"{p}:{line}: column name: {name!r} is not a person's name (letters, spaces, "
                                "' . - only)")
                continue
            rows.append((line, row))
    except csv.Error as e:
        raise CsvError(f"{p}:{reader.line_num}: malformed CSV ({e})") from None
    return rows, problems, warnings
