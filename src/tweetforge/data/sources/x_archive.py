"""The archive X (Twitter) lets every user download: a ZIP, its unpacked folder, or its data/ folder.

Posts are in data/tweets.js, data/tweets-part1.js, ... (data/tweet.js in archives before 2020), each
`window.YTD.tweets.partN = [ {"tweet": {...}}, ... ]`; the author is the username in data/account.js.

An archive is untrusted input: only the files read are looked at (no walk of a whole folder tree), a
folder's files must be regular files inside it (a symbolic link, a FIFO or a device is refused), a ZIP is
checked for its number of entries, unsafe entry names and entries that expand far beyond their compressed
size, and every file is parsed a record at a time, so memory stays bounded whatever the file holds."""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from tweetforge.data.post import BadRecord, Post
from tweetforge.data.sources.errors import SourceError
from tweetforge.data.sources.fields import FieldError, numeric_id
from tweetforge.data.sources.filesystem import open_regular, stat_path
from tweetforge.data.sources.json_posts import json_object_to_post, raw_decode_json
from tweetforge.data.sources.options import BadRecordCount, Limits, ReadOptions
from tweetforge.data.sources.textfile import encoding_from_bom

_TWEET_FILE = re.compile(r"(?:^|/)data/tweets?(?:-part(\d+))?\.js$")
_ACCOUNT_FILE = re.compile(r"(?:^|/)data/account\.js$")
_ASSIGNMENT = re.compile(r"\s*window\.YTD\.[\w.]+\s*=\s*")

READ_CHUNK = 1 << 20
RATIO_CHECKED_ABOVE = 16 << 20
"""A ZIP entry smaller than this may expand any number of times (a small file of spaces does)."""


@dataclass(frozen=True)
class ArchiveFile:
    name: str
    """Path inside the archive, e.g. data/tweets-part1.js."""
    where: str
    """How errors name it: archive.zip:data/tweets.js, the file's path in a folder, or a lone tweets.js."""
    chunks: Callable[[], Iterator[bytes]]
    """The file's bytes, read a chunk at a time within the limits."""


def is_archive_file(name: str) -> bool:
    return bool(_TWEET_FILE.search(name) or _ACCOUNT_FILE.search(name))


def archive_files(path: Path, limits: Limits) -> list[ArchiveFile]:
    """The files of the archive tweetforge reads (tweets and account), whether a ZIP, the unpacked folder,
    its data/ folder or one tweets.js."""
    where = str(path)
    if stat.S_ISDIR(stat_path(path, where).st_mode):
        return _folder_files(path, limits)
    with open_regular(path, where) as f:
        is_zip = zipfile.is_zipfile(f)
    if is_zip:
        return _zip_files(path, limits)
    return [ArchiveFile(f"data/{path.name}", where, partial(_file_chunks, path, where, limits, True))]


def _too_large(where: str, size: int, limits: Limits) -> SourceError:
    return SourceError(where, f"is larger than {limits.max_archive_file_bytes >> 20:,} MB once read ({size:,} bytes or more; "
                              "limit TWEETFORGE_IMPORT_MAX_ARCHIVE_FILE_MB)")


def _folder_files(path: Path, limits: Limits) -> list[ArchiveFile]:
    data = path if path.name == "data" and not (path / "data").is_dir() else path / "data"
    try:
        data_mode = os.stat(data, follow_symlinks=data is path).st_mode
    except FileNotFoundError:
        raise SourceError(str(path), "no data/ folder: a folder is read as an X archive (its unpacked folder or its data/ folder)") from None
    if stat.S_ISLNK(data_mode):
        raise SourceError(str(data), "is a symbolic link: tweetforge reads only the archive folder's own data/ folder")
    if not stat.S_ISDIR(data_mode):
        raise SourceError(str(path), "no data/ folder: a folder is read as an X archive (its unpacked folder or its data/ folder)")
    names = []
    with os.scandir(data) as entries:
        for count, entry in enumerate(entries, start=1):
            if count > limits.max_archive_files:
                raise SourceError(str(data), f"holds more than {limits.max_archive_files:,} files (limit TWEETFORGE_IMPORT_MAX_ARCHIVE_FILES): "
                                             "not an X archive's data folder")
            if is_archive_file(f"data/{entry.name}"):
                names.append(entry.name)
    return [
        ArchiveFile(f"data/{name}", str(data / name), partial(_file_chunks, data / name, str(data / name), limits, False))
        for name in sorted(names)
    ]


def _file_chunks(file: Path, where: str, limits: Limits, follow_symlinks: bool) -> Iterator[bytes]:
    with open_regular(file, where, follow_symlinks=follow_symlinks, inside="an archive folder") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limits.max_archive_file_bytes:
            raise _too_large(where, size, limits)
        read = 0
        while chunk := f.read(READ_CHUNK):
            read += len(chunk)
            if read > limits.max_archive_file_bytes:  # it grew while being read
                raise _too_large(where, read, limits)
            yield chunk


_ZIP_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, struct.error, ValueError, OverflowError)
"""What zipfile raises on a damaged or crafted archive."""


def _is_unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", name)) or ".." in parts


def _zip_files(path: Path, limits: Limits) -> list[ArchiveFile]:
    where = str(path)
    f = open_regular(path, where)  # kept open: the entries are read from it later
    try:
        _check_central_directory(f, where, limits)
        archive = zipfile.ZipFile(f)
    except _ZIP_DAMAGE as exc:
        f.close()
        raise SourceError(where, f"damaged ZIP file: {exc}") from None
    except BaseException:
        f.close()
        raise
    files = []
    for info in archive.infolist():
        if _is_unsafe(info.filename):
            raise SourceError(f"{where}:{info.filename[:200]}", "entry name is absolute or climbs out with '..': not an X archive")
        if not info.is_dir() and is_archive_file(info.filename):
            entry = f"{where}:{info.filename}"
            files.append(ArchiveFile(info.filename, entry, partial(_zip_chunks, archive, info, entry, limits)))
    return files


def _check_central_directory(f: BinaryIO, where: str, limits: Limits) -> None:
    """Refuses a ZIP with too many entries from its end record, before zipfile builds one object per entry."""
    end_record = getattr(zipfile, "_EndRecData", None)
    if end_record is None:
        return
    record = end_record(f)
    if not record:
        return  # not a ZIP after all: zipfile says so
    entries = record[getattr(zipfile, "_ECD_ENTRIES_TOTAL", 4)]
    size = record[getattr(zipfile, "_ECD_SIZE", 5)]
    if entries > limits.max_archive_files or size > limits.max_archive_files * 1024:
        raise SourceError(where, f"ZIP has {entries:,} entries in a directory of {size:,} bytes (limit {limits.max_archive_files:,} entries: "
                                 "TWEETFORGE_IMPORT_MAX_ARCHIVE_FILES)")


def _zip_chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, limits: Limits) -> Iterator[bytes]:
    # The sizes in the header are the attacker's to choose: checked before reading, then counted while reading.
    expands_too_far = limits.max_zip_ratio * max(info.compress_size, 1)
    if info.file_size > limits.max_archive_file_bytes:
        raise _too_large(where, info.file_size, limits)
    if info.file_size > RATIO_CHECKED_ABOVE and info.file_size > expands_too_far:
        raise _zip_bomb(where, info.file_size, info.compress_size, limits)
    read = 0
    try:
        with archive.open(info) as entry:
            while chunk := entry.read(READ_CHUNK):
                read += len(chunk)
                if read > limits.max_archive_file_bytes:
                    raise _too_large(where, read, limits)
                if read > RATIO_CHECKED_ABOVE and read > expands_too_far:
                    raise _zip_bomb(where, read, info.compress_size, limits)
                yield chunk
    except RuntimeError as exc:  # encrypted
        raise SourceError(where, f"cannot be read: {exc}") from None
    except NotImplementedError as exc:
        raise SourceError(where, f"cannot be read: {exc}") from None
    except _ZIP_DAMAGE as exc:
        raise SourceError(where, f"damaged ZIP entry: {exc}") from None


def _zip_bomb(where: str, size: int, compressed: int, limits: Limits) -> SourceError:
    return SourceError(where, f"expands from {compressed:,} to {size:,} bytes or more (over {limits.max_zip_ratio} times; "
                              "limit TWEETFORGE_IMPORT_MAX_ZIP_RATIO): a ZIP bomb, not an X archive")


class _Text:
    """A file's text decoded a chunk at a time, with the position of its first character (line, column),
    so that errors name the file's own line wherever the parser stands."""

    def __init__(self, where: str, chunks: Iterator[bytes]):
        self.where = where
        self.chunks = chunks
        self.encoding = ""
        self.decoder: codecs.IncrementalDecoder | None = None
        self.buf = ""
        self.line = 1
        self.column = 1
        self.eof = False

    def more(self, consumed: int) -> bool:
        """Drops the first `consumed` characters and appends the next chunk; False at the end of the file."""
        if consumed:
            dropped = self.buf[:consumed]
            breaks = dropped.count("\n")
            self.line += breaks
            self.column = consumed - dropped.rfind("\n") if breaks else self.column + consumed
            self.buf = self.buf[consumed:]
        if self.eof:
            return False
        raw = next(self.chunks, b"")
        if self.decoder is None:  # X writes UTF-8; a file saved again by an editor may be UTF-16 with its mark
            self.encoding = encoding_from_bom(raw) or "utf-8-sig"
            self.decoder = codecs.getincrementaldecoder(self.encoding)()
        try:
            text = self.decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            line = self.line + self.buf.count("\n") + bytes(exc.object[: exc.start]).count(b"\n")
            what = "UTF-8" if self.encoding == "utf-8-sig" else self.encoding.upper()
            raise SourceError(self.where, f"byte 0x{exc.object[exc.start]:02x} is not valid {what}", line=line) from None
        if "\x00" in text:  # never valid in JSON, where it would be escaped
            line = self.line + self.buf.count("\n") + text.count("\n", 0, text.index("\x00"))
            raise SourceError(self.where, "contains a NUL byte (a corrupt or binary file?)", line=line)
        self.buf += text
        self.eof = not raw
        return True

    def line_at(self, pos: int) -> int:
        return self.line + self.buf.count("\n", 0, pos)

    def column_at(self, pos: int) -> int:
        start = self.buf.rfind("\n", 0, pos)
        return pos - start if start >= 0 else self.column + pos

    def skip_space(self, pos: int) -> int:
        """The position of the next non-blank character (reading on as needed), or len(buf) at the end."""
        while True:
            pos = _BLANKS.match(self.buf, pos).end()  # type: ignore[union-attr]
            if pos < len(self.buf):
                return pos
            if not self.more(pos):
                return 0
            pos = 0


_BLANKS = re.compile(r"[ \t\n\r]*")


def ytd_items(where: str, chunks: Iterator[bytes], max_record: int) -> Iterator[Any]:
    """Every item of the array assigned in a `window.YTD.x.partN = [...]` file, parsed one
    at a time. Accepts a `;` after the array; refuses anything else after it."""
    text = _Text(where, chunks)
    while len(text.buf) < 4096 and text.more(0):
        pass
    match = _ASSIGNMENT.match(text.buf)
    if not match:
        raise SourceError(where, "does not start with 'window.YTD.<name>.partN = ': not an X archive data file", line=1)
    pos = text.skip_space(match.end())
    if text.buf[pos : pos + 1] != "[":
        raise SourceError(where, "expected a JSON array of posts after '='", line=text.line_at(pos))
    pos = text.skip_space(pos + 1)
    number = 0
    if text.buf[pos : pos + 1] == "]":
        pos += 1
    else:
        while True:
            number += 1
            item, pos = _next_item(text, pos, number, max_record)
            yield item
            pos = text.skip_space(pos)
            after = text.buf[pos : pos + 1]
            if after == ",":
                pos = text.skip_space(pos + 1)
            elif after == "]":
                pos += 1
                break
            elif not after:
                raise SourceError(where, f"truncated JSON: the array ends without ']' after record {number:,}", line=text.line_at(pos))
            else:
                raise SourceError(where, f"malformed JSON: expected ',' or ']' after record {number:,}, found {after!r} "
                                         f"(column {text.column_at(pos)})", line=text.line_at(pos))
    pos = text.skip_space(pos)
    if text.buf[pos : pos + 1] == ";":
        pos = text.skip_space(pos + 1)
    if pos < len(text.buf):
        trailing = text.buf[pos : pos + 30]
        raise SourceError(where, f"unexpected text after the array of posts: {trailing!r} (only ';' may follow it)", line=text.line_at(pos))


def _next_item(text: _Text, pos: int, number: int, max_record: int) -> tuple[Any, int]:
    """The item starting at pos, reading on while it may be incomplete (up to max_record characters)."""
    while True:
        try:
            value, end = raw_decode_json(text.buf, pos)
        except json.JSONDecodeError as exc:
            # An item cut by the end of the chunk fails near the chunk's end (or in a string still open);
            # anything else is malformed however much more is read.
            cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(text.buf) - 16
            if not (cut and _read_on(text, pos, max_record)):
                if cut and not text.eof:
                    raise _record_too_large(text, pos, number, max_record) from None
                truncated = exc.msg.startswith("Unterminated string") or exc.pos >= len(text.buf.rstrip(" \t\n\r"))
                what = "truncated" if text.eof and truncated else "malformed"
                raise SourceError(text.where, f"{what} JSON: {exc.msg} (column {text.column_at(exc.pos)})",
                                  line=text.line_at(exc.pos)) from None
            pos = 0
            continue
        except RecursionError:
            raise SourceError(text.where, f"JSON of record {number:,} is nested too deeply (hundreds of levels): not a post",
                              line=text.line_at(pos)) from None
        if end - pos > max_record:
            raise _record_too_large(text, pos, number, max_record)
        if end < len(text.buf) or text.eof:
            return value, end
        # a number or literal may go on in the next chunk
        if not _read_on(text, pos, max_record):
            raise _record_too_large(text, pos, number, max_record)
        pos = 0


def _record_too_large(text: _Text, pos: int, number: int, max_record: int) -> SourceError:
    return SourceError(text.where, f"record {number:,} is larger than {max_record:,} characters (limit TWEETFORGE_IMPORT_MAX_LINE_BYTES)",
                       line=text.line_at(pos))


def _read_on(text: _Text, pos: int, max_record: int) -> bool:
    """Drops what comes before pos and reads at least as much again as is pending (so an item of n characters
    is parsed O(log n) times); False at the end of the file or when the item would exceed max_record."""
    pending = len(text.buf) - pos
    if pending > max_record or text.eof:
        return False
    text.more(pos)
    while len(text.buf) < 2 * pending and text.more(0):
        pass
    return True


def _part_number(name: str) -> int:
    m = _TWEET_FILE.search(name)
    return int(m.group(1)) if m and m.group(1) else 0


def read_x_archive_posts(path: Path, options: ReadOptions) -> Iterator[Post | BadRecord]:
    limits = options.limits
    files = archive_files(path, limits)
    tweet_files = sorted((f for f in files if _TWEET_FILE.search(f.name)), key=lambda f: _part_number(f.name))
    if not tweet_files:
        raise SourceError(str(path), "no data/tweets.js in this archive: is it an X archive?")
    author = options.author.lstrip("@") if options.author else None
    if author is None:
        account = next((f for f in files if _ACCOUNT_FILE.search(f.name)), None)
        if account is None:
            raise SourceError(str(path), "no data/account.js to read the author from: pass --author HANDLE")
        first = next(ytd_items(account.where, account.chunks(), limits.max_line_bytes), None)
        try:
            author = first["account"]["username"]  # type: ignore[index]
        except (IndexError, KeyError, TypeError):
            raise SourceError(account.where, "has no account.username") from None
        if not isinstance(author, str) or not author:
            raise SourceError(account.where, "has no account.username")
    counted = BadRecordCount(str(path), limits)
    for tweet_file in tweet_files:
        for number, item in enumerate(ytd_items(tweet_file.where, tweet_file.chunks(), limits.max_line_bytes), start=1):
            tweet = item.get("tweet", item) if isinstance(item, dict) else item
            location = f"{tweet_file.name} record {number}"
            post = json_object_to_post(tweet, options, number, location, default_author=author)
            if type(post) is Post:
                try:
                    numeric_id(post.post_id, "id")
                except FieldError as exc:
                    post = BadRecord(location, str(exc))
            if type(post) is BadRecord:
                counted(post)
            yield post
