"""The archive X (Twitter) lets every user download: a ZIP, its unpacked folder, or its data/ folder.

Posts are in data/tweets.js, data/tweets-part1.js, ... (data/tweet.js in archives before 2020), each
`window.YTD.tweets.partN = [ {"tweet": {...}}, ... ]`; the author is the username in data/account.js."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tweetforge.data.post import BadRecord, Post
from tweetforge.data.sources.errors import SourceError
from tweetforge.data.sources.json_posts import json_object_to_post
from tweetforge.data.sources.options import ReadOptions

_TWEET_FILE = re.compile(r"(?:^|/)data/tweets?(?:-part(\d+))?\.js$")
_ACCOUNT_FILE = re.compile(r"(?:^|/)data/account\.js$")
_ASSIGNMENT = re.compile(r"^\s*window\.YTD\.[\w.]+\s*=\s*")


@dataclass(frozen=True)
class ArchiveFile:
    name: str
    """Path inside the archive, e.g. data/tweets-part1.js."""
    read: Any
    """() -> bytes"""
    standalone: bool = False
    """A lone tweets.js given as the source: errors name just that file."""

    def where(self, archive: Path) -> str:
        return str(archive) if self.standalone else f"{archive}:{self.name}"


def archive_files(path: Path) -> list[ArchiveFile]:
    """Every file of the archive, whether a ZIP, the unpacked folder, its data/ folder or one tweets.js."""
    if path.is_dir():
        root = path.parent if path.name == "data" and not (path / "data").is_dir() else path
        return [
            ArchiveFile(str(p.relative_to(root)).replace("\\", "/"), p.read_bytes)
            for p in sorted(root.rglob("*.js"))
        ]
    if zipfile.is_zipfile(path):
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise SourceError(str(path), f"damaged ZIP file: {exc}") from None
        return [
            ArchiveFile(info.filename, lambda info=info: archive.read(info))
            for info in archive.infolist()
            if info.filename.endswith(".js")
        ]
    return [ArchiveFile(f"data/{path.name}", path.read_bytes, standalone=True)]


def parse_ytd(where: str, raw: bytes) -> list[Any]:
    """The array assigned in a `window.YTD.x.partN = [...]` file."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SourceError(where, f"byte 0x{raw[exc.start]:02x} is not valid UTF-8", line=line) from None
    match = _ASSIGNMENT.match(text)
    if not match:
        raise SourceError(where, "does not start with 'window.YTD.<name>.partN = ': not an X archive data file", line=1)
    body = " " * match.end() + text[match.end():]  # keep offsets so JSON errors report the file's own line
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        what = "truncated" if not body.rstrip().rstrip(";").endswith("]") else "malformed"
        raise SourceError(where, f"{what} JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
    if not isinstance(data, list):
        raise SourceError(where, "expected a JSON array of posts", line=1)
    return data


def _part_number(name: str) -> int:
    m = _TWEET_FILE.search(name)
    return int(m.group(1)) if m and m.group(1) else 0


def read_x_archive_posts(path: Path, options: ReadOptions) -> Iterator[Post | BadRecord]:
    files = archive_files(path)
    tweet_files = sorted((f for f in files if _TWEET_FILE.search(f.name)), key=lambda f: _part_number(f.name))
    if not tweet_files:
        raise SourceError(str(path), "no data/tweets.js in this archive: is it an X archive?")
    author = options.author.lstrip("@") if options.author else None
    if author is None:
        account = next((f for f in files if _ACCOUNT_FILE.search(f.name)), None)
        if account is None:
            raise SourceError(str(path), "no data/account.js to read the author from: pass --author HANDLE")
        entries = parse_ytd(account.where(path), account.read())
        try:
            author = entries[0]["account"]["username"]
        except (IndexError, KeyError, TypeError):
            raise SourceError(account.where(path), "has no account.username") from None
    for tweet_file in tweet_files:
        items = parse_ytd(tweet_file.where(path), tweet_file.read())
        for number, item in enumerate(items, start=1):
            tweet = item.get("tweet", item) if isinstance(item, dict) else item
            yield json_object_to_post(tweet, options, number, f"{tweet_file.name} record {number}", default_author=author)
