"""Reading a text export safely: existence, emptiness, binary content, encoding and line length are
checked here once for every line-based format, so each error names the file and the line."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from tweetforge.sources.errors import SourceError

MAX_LINE_BYTES = 1_000_000
"""No post export has a line this long; such a line is a broken or foreign file, not a post."""

csv.field_size_limit(MAX_LINE_BYTES)


def check_readable(path: Path) -> None:
    if not path.exists():
        raise SourceError(str(path), "no such file or directory")
    if path.is_dir():
        return
    if path.stat().st_size == 0:
        raise SourceError(str(path), "file is empty")
    with path.open("rb") as f:
        head = f.read(8192)
    if looks_binary(head):
        raise SourceError(str(path), "binary file, not a text export (CSV, JSONL or tweets.js)")


def looks_binary(head: bytes) -> bool:
    if not head:
        return False
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 13))
    return control / len(head) > 0.10


def read_head(path: Path, encoding: str, size: int = 65536) -> str:
    """The start of a file as text, for format detection; tolerant of a multi-byte char cut at the end."""
    with path.open("rb") as f:
        raw = f.read(size)
    return raw.decode(encoding, errors="ignore").lstrip("\ufeff")


def decoded_lines(path: Path, encoding: str) -> Iterator[str]:
    """Lines of a text file decoded one by one, so a decoding error or a NUL byte names its line."""
    where = str(path)
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise SourceError(
                    where, f"line is {len(raw):,} bytes long (limit {MAX_LINE_BYTES:,}): not a post export", line=number
                )
            if b"\x00" in raw:
                raise SourceError(where, "contains a NUL byte (a corrupt or binary file?)", line=number)
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                bad = raw[exc.start]
                hint = " (pass --encoding latin-1 if the file is Latin-1)" if encoding.lower().replace("-", "") in ("utf8", "utf8sig") else ""
                raise SourceError(where, f"byte 0x{bad:02x} is not valid {encoding}{hint}", line=number) from None
            if number == 1:
                text = text.lstrip("\ufeff")
            yield text


def csv_rows(path: Path, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(first line of the record, fields) for every CSV record; quoting errors name their line."""
    where = str(path)
    reader = csv.reader(decoded_lines(path, encoding), strict=False)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise SourceError(where, f"malformed CSV: {exc}", line=reader.line_num) from None
        yield start, row
        start = reader.line_num + 1
