"""Every input tweetforge reads, each yielding Post records. The format is detected from the content;
`--format` overrides it."""

from __future__ import annotations

import hashlib
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from tweetforge.data.post import BadRecord, Post
from tweetforge.data.sources.csv_formats import CSV_FORMATS, read_csv_posts
from tweetforge.data.sources.errors import SourceError
from tweetforge.data.sources.example import EXAMPLES, example_path, read_example_posts
from tweetforge.data.sources.filesystem import open_regular, refuse_unless_regular, stat_path
from tweetforge.data.sources.json_posts import read_jsonl_posts
from tweetforge.data.sources.options import ReadOptions
from tweetforge.data.sources.textfile import encoding_from_bom, read_head, refuse_binary
from tweetforge.data.sources.x_archive import archive_files, read_x_archive_posts

FORMATS: dict[str, str] = {
    "x-archive": "X/Twitter archive: the ZIP, its folder, its data/ folder or a tweets.js",
    **{name: fmt.description for name, fmt in CSV_FORMATS.items()},
    "jsonl": "JSON Lines, one post object a line (X API tweets, twarc, or name fields with --text-column etc.)",
    "example": "bundled real data: example:" + ", example:".join(EXAMPLES),
}


@dataclass(frozen=True)
class Source:
    spec: str
    """What the user named: a path or example:NAME."""
    format: str
    options: ReadOptions

    @property
    def path(self) -> Path:
        if self.format == "example":
            return example_path(self.spec.split(":", 1)[1])
        return Path(self.spec)

    def fingerprint(self) -> str:
        """sha256 of the bytes read (the tweets and account files of a folder archive), recorded with each import."""
        digest = hashlib.sha256()
        path = self.path
        if path.is_dir():
            for file in archive_files(path, self.options.limits):
                for chunk in file.chunks():
                    digest.update(chunk)
        else:
            with open_regular(path, self.spec) as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        return digest.hexdigest()

    def posts(self) -> Iterator[Post | BadRecord]:
        if self.format == "example":
            return read_example_posts(self.spec.split(":", 1)[1], self.options)
        if self.format == "x-archive":
            return read_x_archive_posts(self.path, self.options)
        if self.format == "jsonl":
            return read_jsonl_posts(self.path, self.options)
        return read_csv_posts(self.path, CSV_FORMATS[self.format], self.options)


def detect_format(path: Path, options: ReadOptions) -> str:
    if path.is_dir() or (path.suffix.lower() == ".zip"):
        return "x-archive"
    head = read_head(path, options.encoding or "utf-8")
    stripped = head.lstrip()
    if stripped.startswith("window.YTD."):
        return "x-archive"
    if stripped.startswith("{") or path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    import csv

    first_line = head.splitlines()[0] if head else ""
    try:
        first = next(csv.reader([first_line]))
    except (csv.Error, StopIteration):
        first = []
    for name, fmt in CSV_FORMATS.items():
        if name != "csv" and fmt.recognises(first):
            return name
    return "csv"


def open_source(spec: str, format: str | None = None, options: ReadOptions | None = None) -> Source:
    """The source a user named, checked to exist and to be readable text, with its format."""
    try:
        return _open_source(spec, format, options or ReadOptions())
    except (OSError, LookupError) as exc:  # unreadable file, unknown encoding
        raise SourceError(spec, str(exc)) from None


def _open_source(spec: str, format: str | None, options: ReadOptions) -> Source:
    if spec.startswith("example:"):
        if format not in (None, "example"):
            raise SourceError(spec, f"--format {format} does not apply to bundled examples")
        example_path(spec.split(":", 1)[1])
        return Source(spec, "example", options)
    if format is not None and format not in FORMATS:
        raise SourceError(spec, f"unknown format {format!r} (known: {', '.join(FORMATS)})")
    path = Path(spec)
    mode = stat_path(path, spec).st_mode  # the user's own symbolic link is followed
    if stat.S_ISDIR(mode):
        if format not in (None, "x-archive"):
            raise SourceError(spec, f"is a folder: only an X archive folder can be read, not {format}")
        return Source(spec, "x-archive", options)
    refuse_unless_regular(mode, spec)  # a FIFO or a device: refused before it is opened
    with open_regular(path, spec) as f:
        head = f.read(8192)
        is_zip = zipfile.is_zipfile(f)
    if is_zip:
        if format not in (None, "x-archive"):
            raise SourceError(spec, f"a ZIP file can only be read as x-archive, not {format}")
        return Source(spec, "x-archive", options)
    if not head:
        raise SourceError(spec, "file is empty")
    if options.encoding is None and (marked := encoding_from_bom(head)):
        options = replace(options, encoding=marked)
    refuse_binary(spec, head, options.encoding or "utf-8")
    return Source(spec, format or detect_format(path, options), options)


__all__ = ["FORMATS", "BadRecord", "Post", "ReadOptions", "Source", "SourceError", "open_source"]
