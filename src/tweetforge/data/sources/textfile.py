"""Reading a text export safely: existence, emptiness, binary content, encoding and line length are
checked here once for every line-based format, so each error names the file and the line."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from itertools import repeat
from pathlib import Path

from tweetforge.data.sources.errors import SourceError

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


CHUNK_BYTES = 1 << 20
"""Lines are read in chunks this large and checked a chunk at a time; a chunk with anything to report
goes through the line-by-line checks, so an error names the same line as it would line by line."""


def decoded_lines(path: Path, encoding: str) -> Iterator[str]:
    """Lines of a text file decoded one by one, so a decoding error or a NUL byte names its line."""
    where = str(path)
    with path.open("rb") as f:
        number = 1
        while raw := f.read(CHUNK_BYTES):
            if raw[-1] != 10:
                raw += f.readline()
            lines = None
            if b"\x00" not in raw and (len(raw) <= MAX_LINE_BYTES or max(map(len, raw.split(b"\n"))) < MAX_LINE_BYTES):
                try:
                    lines = list(map(bytes.decode, io.BytesIO(raw), repeat(encoding)))
                except UnicodeDecodeError:
                    pass
            if lines is None:
                yield from _checked_lines(where, io.BytesIO(raw), encoding, number)
            else:
                if number == 1:
                    lines[0] = lines[0].lstrip("\ufeff")
                yield from lines
            number += raw.count(b"\n") + (raw[-1] != 10)


def _checked_lines(where: str, lines: Iterable[bytes], encoding: str, first: int) -> Iterator[str]:
    for number, raw in enumerate(lines, start=first):
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
    try:
        for row in reader:
            yield start, row
            start = reader.line_num + 1
    except csv.Error as exc:
        raise SourceError(where, f"malformed CSV: {exc}", line=reader.line_num) from None
