"""Reading a text export safely: emptiness, binary content, encoding, NUL bytes and line length are checked
here once for every line-based format, so each error names the file and the line. Lines are read in
bounded pieces: a line longer than the limit is refused without being held in memory."""

from __future__ import annotations

import codecs
import csv
import io
from collections import deque
from collections.abc import Iterable, Iterator
from functools import cache
from itertools import repeat
from pathlib import Path
from typing import BinaryIO

from tweetforge.data.sources.errors import SourceError
from tweetforge.data.sources.filesystem import open_regular

MAX_LINE_BYTES = 1_000_000
"""The default of the setting import_max_line_bytes: no post export has a line this long."""

_LINE_LIMIT_SETTING = "TWEETFORGE_IMPORT_MAX_LINE_BYTES"

_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE, whose mark starts it
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def encoding_from_bom(head: bytes) -> str | None:
    """UTF-16 or UTF-32 when the file starts with its byte order mark (a UTF-8 mark is dropped when read)."""
    return next((name for mark, name in _BYTE_ORDER_MARKS if head.startswith(mark)), None)


@cache
def is_wide(encoding: str) -> bool:
    """An encoding where a line break is not the single byte 0x0a (UTF-16, UTF-32, EBCDIC): lines are then
    found in decoded text instead of in bytes. Raises LookupError for an unknown encoding."""
    try:
        return not "a\n".encode(encoding).endswith(b"a\n")
    except ValueError:  # a codec that cannot encode plain text (idna, punycode)
        raise LookupError(f"{encoding!r} is not an encoding for text files") from None


def refuse_binary(where: str, head: bytes, encoding: str) -> None:
    if is_wide(encoding):
        text = head.decode(encoding, errors="ignore")
        control = sum(1 for c in text if c < " " and c not in "\t\n\r")
        if text and control / len(text) <= 0.10:
            return
    elif not looks_binary(head):
        return
    hint = ""
    if head[1::2].count(0) > len(head) // 4 or head[0::2].count(0) > len(head) // 4:
        hint = " (if it is UTF-16 text without a byte order mark, pass --encoding utf-16-le or utf-16-be)"
    raise SourceError(where, f"binary file, not a text export (CSV, JSONL or tweets.js){hint}")


def looks_binary(head: bytes) -> bool:
    if not head:
        return False
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 13))
    return control / len(head) > 0.10


def read_head(path: Path, encoding: str, size: int = 65536) -> str:
    """The start of a file as text, for format detection; tolerant of a multi-byte char cut at the end."""
    with open_regular(path, str(path)) as f:
        raw = f.read(size)
    return raw.decode(encoding, errors="ignore").lstrip("\ufeff")


CHUNK_BYTES = 1 << 20
"""Lines are read in chunks this large and checked a chunk at a time; a chunk with anything to report
goes through the line-by-line checks, so an error names the same line as it would line by line."""


def decoded_lines(path: Path, encoding: str, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Lines of a text file decoded one by one, so a decoding error or a NUL byte names its line."""
    for _, _, lines in decoded_chunks(path, encoding, max_line_bytes):
        yield from lines


def decoded_chunks(path: Path, encoding: str, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, int, list[str]]]:
    """(number of its first line, its size in bytes, its lines decoded) for each chunk of a text file."""
    where = str(path)
    with open_regular(path, where) as f:
        if is_wide(encoding):
            yield from _wide_chunks(where, f, encoding, max_line_bytes)
            return
        number = 1
        while raw := f.read(CHUNK_BYTES):
            if raw[-1] != 10:
                # the rest of the chunk's last line, but never more than the limit: a longer line is refused below
                raw += f.readline(max_line_bytes + 1)
            lines = None
            if b"\x00" not in raw and (len(raw) <= max_line_bytes or max(map(len, raw.split(b"\n"))) <= max_line_bytes):
                try:
                    lines = list(map(bytes.decode, io.BytesIO(raw), repeat(encoding)))
                except UnicodeDecodeError:
                    pass
            if lines is None:
                lines = list(_checked_lines(where, io.BytesIO(raw), encoding, number, max_line_bytes))
            elif number == 1:
                lines[0] = lines[0].lstrip("\ufeff")
            yield number, len(raw), lines
            number += raw.count(b"\n") + (raw[-1] != 10)


def _too_long(where: str, limit: int, line: int, unit: str = "bytes") -> SourceError:
    return SourceError(where, f"line is longer than {limit:,} {unit} (limit {_LINE_LIMIT_SETTING}): not a post export", line=line)


def _checked_lines(where: str, lines: Iterable[bytes], encoding: str, first: int, max_line_bytes: int) -> Iterator[str]:
    for number, raw in enumerate(lines, start=first):
        if len(raw) > max_line_bytes:
            raise _too_long(where, max_line_bytes, number)
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


def _wide_chunks(where: str, f: BinaryIO, encoding: str, max_chars: int) -> Iterator[tuple[int, int, list[str]]]:
    """decoded_chunks of a UTF-16/UTF-32 (or other non-ASCII-compatible) file: lines are split after decoding."""
    decoder = codecs.getincrementaldecoder(encoding)()
    pending = ""
    number = 1
    while True:
        raw = f.read(CHUNK_BYTES)
        try:
            text = pending + decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            line = number + bytes(exc.object[: exc.start]).decode(encoding, errors="ignore").count("\n")
            raise SourceError(where, f"is not valid {encoding} ({exc.reason})", line=line) from None
        first = number
        lines = []
        start = 0
        while (end := text.find("\n", start)) != -1:
            lines.append(_checked_text(where, text[start : end + 1], number, max_chars))
            start = end + 1
            number += 1
        pending = text[start:]
        if len(pending) > max_chars:
            raise _too_long(where, max_chars, number, "characters")
        if not raw and pending:
            lines.append(_checked_text(where, pending, number, max_chars))
        if lines:
            yield first, len(raw), lines
        if not raw:
            return


def _checked_text(where: str, line: str, number: int, max_chars: int) -> str:
    if len(line) > max_chars:
        raise _too_long(where, max_chars, number, "characters")
    if "\x00" in line:
        raise SourceError(where, "contains a NUL character (a corrupt or binary file?)", line=number)
    return line.lstrip("\ufeff") if number == 1 else line


def csv_rows(path: Path, encoding: str, max_record_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, list[str]]]:
    """(first line of the record, fields) for every CSV record; quoting errors name their line."""
    where = str(path)
    csv.field_size_limit(max_record_bytes)
    start = 1

    def lines() -> Iterator[str]:
        # A record of several lines (quoted fields holding line breaks) is held to the limit too. Checked a chunk
        # at a time, from the chunks read whole since the record began: nothing is added to each line's cost.
        inside: deque[tuple[int, int]] = deque()
        size = 0
        for first, chunk_bytes, chunk in decoded_chunks(path, encoding, max_record_bytes):
            while inside and inside[0][0] < start:
                size -= inside.popleft()[1]
            if size > max_record_bytes:
                raise SourceError(where, f"a record of more than {max_record_bytes:,} bytes starts here (an unclosed quote?; "
                                         f"limit {_LINE_LIMIT_SETTING})", line=start)
            inside.append((first, chunk_bytes))
            size += chunk_bytes
            yield from chunk

    reader = csv.reader(lines(), strict=False)
    try:
        for row in reader:
            yield start, row
            start = reader.line_num + 1
    except csv.Error as exc:
        raise SourceError(where, f"malformed CSV: {exc}", line=reader.line_num) from None
