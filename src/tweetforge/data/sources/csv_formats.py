"""CSV exports: the Kaggle / twint 36-column export, the ElonMuskTweetPredictor cleaned CSV, the Trump
Twitter Archive, Sentiment140, and any other CSV whose columns the user names."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime, timedelta
from pathlib import Path

from tweetforge.data.post import BadRecord, Post
from tweetforge.data.sources.errors import SourceError
from tweetforge.data.sources.fields import (
    FieldError,
    checked,
    derived_id,
    leading_mention,
    numeric_id,
    parse_bool,
    parse_int,
    parse_time,
)
from tweetforge.data.sources.options import BadRecordCount, ReadOptions
from tweetforge.data.sources.textfile import csv_rows

Row = list[str]
RowMapper = Callable[[int, Row], Post]

KAGGLE_HEADER = (
    "id,conversation_id,created_at,date,time,timezone,user_id,username,name,place,tweet,language,mentions,urls,"
    "photos,replies_count,retweets_count,likes_count,hashtags,cashtags,link,retweet,quote_url,video,thumbnail,near,"
    "geo,source,user_rt_id,user_rt,retweet_id,reply_to,retweet_date,translate,trans_src,trans_dest"
).split(",")
ELON_CLEANED_HEADER = ["", "tweet", "day", "nlikes", "date", "time"]
TRUMP_ARCHIVE_HEADER = ["id", "text", "isRetweet", "isDeleted", "device", "favorites", "retweets", "date"]

TEXT_COLUMNS = ("text", "full_text", "tweet", "content", "body", "post")
AUTHOR_COLUMNS = ("author", "username", "screen_name", "user", "handle", "user_name")
ID_COLUMNS = ("id", "id_str", "post_id", "tweet_id", "status_id")
TIME_COLUMNS = ("created_at", "timestamp", "date", "datetime", "time")

_SCREEN_NAME = re.compile(r"'screen_name': '(\w+)'")


@dataclass(frozen=True)
class CsvFormat:
    name: str
    description: str
    default_encoding: str
    has_header: bool
    recognises: Callable[[Row], bool]
    mapper: Callable[[Row, ReadOptions, str], RowMapper]


def required_author(options: ReadOptions, where: str, fmt: str) -> str:
    if not options.author:
        raise SourceError(where, f"the {fmt} format has no author column: pass --author HANDLE")
    return options.author.lstrip("@")


def some_columns(header: Row, shown: int = 12) -> str:
    """The first columns of a header for an error message, each cut short: a file may have 20,000."""
    names = ", ".join(name if len(name) <= 40 else name[:40] + "…" for name in header[:shown])
    return names + (f", … and {len(header) - shown:,} more" if len(header) > shown else "")


def column_index(header: Row, where: str) -> Callable[[str], int]:
    positions = {name: i for i, name in enumerate(header)}

    def index(name: str) -> int:
        if name not in positions:
            raise SourceError(where, f"CSV header has no {name!r} column (columns: {some_columns(header)})", line=1)
        return positions[name]

    return index


# The mappers below build each Post with positional arguments (several times faster than keywords
# for a slots dataclass, which matters at a million rows); this guards the order they rely on.
if [f.name for f in dataclass_fields(Post)] != [
    "network", "post_id", "author", "text", "created_at", "is_retweet", "reply_to", "likes", "reposts", "language", "record",
]:
    raise ImportError("Post fields changed: update the positional Post(...) calls in tweetforge.data.sources.csv_formats")


def _twint_offset(tz: str, cache: dict[str, timedelta | None]) -> timedelta | None:
    """The UTC offset a twint timezone like '+0400' gives (as fromisoformat reads '+04:00'), or None."""
    if tz in cache:
        return cache[tz]
    offset = None
    if len(tz) == 5 and tz[0] in "+-":
        try:
            offset = datetime.fromisoformat(f"2000-01-01T00:00:00{tz[:3]}:{tz[3:]}").utcoffset()
        except ValueError:
            pass
    if len(cache) < 1000:
        cache[tz] = offset
    return offset


def kaggle_mapper(header: Row, options: ReadOptions, where: str) -> RowMapper:
    col = column_index(header, where)
    i_id, i_date, i_time, i_tz, i_user, i_text = (col(n) for n in ("id", "date", "time", "timezone", "username", "tweet"))
    i_lang, i_likes, i_rts, i_rt, i_reply = (col(n) for n in ("language", "likes_count", "retweets_count", "retweet", "reply_to"))
    author_override = options.author.lstrip("@") if options.author else None
    network = options.network
    offsets: dict[str, timedelta | None] = {}

    def created(date: str, time: str, tz: str) -> datetime | None:
        stamp = f"{date}T{time}"
        offset = _twint_offset(tz, offsets)
        if offset is not None:
            # the same instant as parsing the stamp with its offset, without building a tzinfo per row
            try:
                naive = datetime.fromisoformat(stamp)
            except ValueError:
                pass
            else:
                if naive.tzinfo is None:
                    return naive - offset
        if len(tz) == 5 and tz[0] in "+-":
            stamp += f"{tz[:3]}:{tz[3:]}"
        return parse_time(stamp, "date/time/timezone")

    def to_post(line: int, row: Row) -> Post:
        text = row[i_text]
        reply = row[i_reply]
        replied = _SCREEN_NAME.search(reply) if reply not in ("", "[]") else None
        # an id of digits costs one call (a million rows); anything else gets numeric_id's reason (too long: checked())
        return Post(
            network,
            row[i_id] if row[i_id].isdigit() else numeric_id(row[i_id], "id"),
            author_override or row[i_user],
            text,
            created(row[i_date], row[i_time], row[i_tz]),
            parse_bool(row[i_rt], "retweet") or text.startswith("RT @"),
            replied.group(1) if replied else leading_mention(text),
            parse_int(row[i_likes], "likes_count"),
            parse_int(row[i_rts], "retweets_count"),
            row[i_lang] or None,
            line,
        )

    return to_post


def elon_cleaned_mapper(header: Row, options: ReadOptions, where: str) -> RowMapper:
    author = required_author(options, where, "elon-cleaned")
    network = options.network

    def to_post(line: int, row: Row) -> Post:
        text, date, time = row[1], row[4], row[5]
        return Post(
            network,
            derived_id(author, f"{date} {time}", text),
            author,
            text,
            parse_time(f"{date}T{time}", "date/time"),
            text.startswith("RT @"),
            leading_mention(text),
            parse_int(row[3], "nlikes"),
            None,
            None,
            line,
        )

    return to_post


def trump_archive_mapper(header: Row, options: ReadOptions, where: str) -> RowMapper:
    author = required_author(options, where, "trump-archive")
    network = options.network

    def to_post(line: int, row: Row) -> Post:
        text = row[1]
        return Post(
            network,
            row[0] if row[0].isdigit() else numeric_id(row[0], "id"),
            author,
            text,
            parse_time(row[7], "date"),
            parse_bool(row[2], "isRetweet") or text.startswith("RT @"),
            leading_mention(text),
            parse_int(row[5], "favorites"),
            parse_int(row[6], "retweets"),
            None,
            line,
        )

    return to_post


def sentiment140_mapper(header: Row, options: ReadOptions, where: str) -> RowMapper:
    author_override = options.author.lstrip("@") if options.author else None
    network = options.network

    def to_post(line: int, row: Row) -> Post:
        text = row[5]
        return Post(
            network,
            row[1] if row[1].isdigit() else numeric_id(row[1], "id"),
            author_override or row[4],
            text,
            parse_time(row[2], "date"),
            text.startswith("RT @"),
            leading_mention(text),
            None,
            None,
            None,
            line,
        )

    return to_post


def pick_column(header: Row, chosen: str | None, candidates: tuple[str, ...], what: str, where: str, option: str) -> int | None:
    lowered = [h.strip().lower() for h in header]
    if chosen is not None:
        if chosen in header:
            return header.index(chosen)
        if chosen.lower() in lowered:
            return lowered.index(chosen.lower())
        raise SourceError(where, f"CSV header has no column {chosen!r} given as {option} (columns: {some_columns(header)})", line=1)
    for name in candidates:
        if name in lowered:
            return lowered.index(name)
    return None


def generic_mapper(header: Row, options: ReadOptions, where: str) -> RowMapper:
    i_text = pick_column(header, options.text_column, TEXT_COLUMNS, "text", where, "--text-column")
    if i_text is None:
        raise SourceError(
            where,
            f"CSV header has no text column (looked for {', '.join(TEXT_COLUMNS)}; columns: {some_columns(header)}): "
            "pass --text-column NAME",
            line=1,
        )
    i_author = pick_column(header, options.author_column, AUTHOR_COLUMNS, "author", where, "--author-column")
    if i_author is None and not options.author:
        raise SourceError(
            where, f"CSV header has no author column (columns: {some_columns(header)}): pass --author-column NAME or --author HANDLE", line=1
        )
    i_id = pick_column(header, options.id_column, ID_COLUMNS, "id", where, "--id-column")
    i_time = pick_column(header, options.time_column, TIME_COLUMNS, "time", where, "--time-column")
    author_override = options.author.lstrip("@") if options.author else None
    time_name = header[i_time] if i_time is not None else ""

    def to_post(line: int, row: Row) -> Post:
        text = row[i_text]
        author = author_override or row[i_author].lstrip("@")  # type: ignore[index]
        when = row[i_time] if i_time is not None else ""
        return Post(
            network=options.network,
            post_id=row[i_id] if i_id is not None else derived_id(author, when, text),
            author=author,
            text=text,
            created_at=parse_time(when, time_name) if when else None,
            is_retweet=text.startswith("RT @"),
            reply_to=leading_mention(text),
            record=line,
        )

    return to_post


def _is_sentiment140(row: Row) -> bool:
    return len(row) == 6 and row[0] in ("0", "2", "4") and row[1].isdigit()


CSV_FORMATS: dict[str, CsvFormat] = {
    fmt.name: fmt
    for fmt in (
        CsvFormat("kaggle", "Kaggle / twint 36-column export", "utf-8", True, lambda h: h[:3] == KAGGLE_HEADER[:3] and "tweet" in h, kaggle_mapper),
        CsvFormat("elon-cleaned", "ElonMuskTweetPredictor cleaned CSV (no ids, no author)", "utf-8", True,
                  lambda h: h == ELON_CLEANED_HEADER, elon_cleaned_mapper),
        CsvFormat("trump-archive", "Trump Twitter Archive export (no author)", "utf-8", True,
                  lambda h: h == TRUMP_ARCHIVE_HEADER, trump_archive_mapper),
        CsvFormat("sentiment140", "Sentiment140 (no header, Latin-1, many authors)", "latin-1", False, _is_sentiment140, sentiment140_mapper),
        CsvFormat("csv", "any CSV with a header; name columns with --text-column etc.", "utf-8", True, lambda h: True, generic_mapper),
    )
}


def read_csv_posts(path: Path, fmt: CsvFormat, options: ReadOptions) -> Iterator[Post | BadRecord]:
    where = str(path)
    rows = csv_rows(path, options.encoding or fmt.default_encoding, options.limits.max_line_bytes)
    header: Row | None = None
    to_post: RowMapper | None = None
    if fmt.has_header:
        first = next(rows, None)
        if first is None:
            raise SourceError(where, "file has no header line")
        header = first[1]
    else:
        header = []
    to_post = fmt.mapper(header, options, where)
    width = len(header) if fmt.has_header else 6
    counted = BadRecordCount(where, options.limits)
    any_rows = False
    for line, row in rows:
        if not row:
            continue
        any_rows = True
        if len(row) != width:
            yield counted(BadRecord(f"line {line}", f"has {len(row):,} fields, expected {width:,}"))
            continue
        try:
            post = checked(to_post(line, row))
        except FieldError as exc:
            post = BadRecord(f"line {line}", str(exc))
        if type(post) is BadRecord:
            counted(post)
        yield post
    if not any_rows:
        raise SourceError(where, "file has a header but no posts")

