"""Field parsing shared by every source: numbers, timestamps, reply and retweet markers, derived ids."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone

from tweetforge.data.post import MAX_TEXT_CHARS, BadRecord, Post
from tweetforge.db.schema import POST_ID_LENGTH

_LEADING_MENTION = re.compile(r"@(\w{1,50})")
_TZ_NAMES = {"UTC": 0, "GMT": 0, "PST": -8, "PDT": -7, "MST": -7, "MDT": -6, "CST": -6, "CDT": -5, "EST": -5, "EDT": -4}


class FieldError(ValueError):
    """A field that cannot be read; becomes a BadRecord naming the field."""


_BIGINT = 2**63
"""Counts are stored as 64-bit integers."""


def parse_int(value: str | None, field: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        number = None
        try:
            if "." in value or "e" in value.lower():
                number = int(float(value))
        except (ValueError, OverflowError):  # 'nan', 'inf'
            pass
        if number is None:
            if value.strip().lstrip("+-").isdigit():  # more digits than Python converts (4,300)
                raise FieldError(f"{field} is a number of {len(value):,} digits: out of range") from None
            raise FieldError(f"{field} is not a number: {value[:40]!r}") from None
    if -_BIGINT < number < _BIGINT:
        return number
    raise FieldError(f"{field} is out of range: {value[:40]!r}{'…' if len(value) > 40 else ''}")


MAX_NUMERIC_ID_DIGITS = 20
"""X ids are 64-bit numbers: at most 20 digits."""


def numeric_id(value: str, field: str) -> str:
    """The id of a format whose ids are numbers (X archives and exports of X); '' is left to checked()."""
    if (value.isdigit() and value.isascii() and len(value) <= MAX_NUMERIC_ID_DIGITS) or not value:
        return value
    if value.isdigit():
        raise FieldError(f"{field} has {len(value):,} digits (an X id has at most {MAX_NUMERIC_ID_DIGITS})")
    raise FieldError(f"{field} is not a number: {value[:40]!r}")


_BOOLS = {"t": True, "true": True, "True": True, "TRUE": True, "1": True, "yes": True,
          "": False, "f": False, "false": False, "False": False, "FALSE": False, "0": False, "no": False}
"""The spellings exports use, looked up as they are (fast) and then stripped and lower-cased."""


def parse_bool(value: str | None, field: str) -> bool:
    if value is None:
        return False
    known = _BOOLS.get(value)
    if known is None:
        known = _BOOLS.get(value.strip().lower())
    if known is None:
        raise FieldError(f"{field} is not true/false: {value[:40]!r}")
    return known


def to_utc_naive(moment: datetime) -> datetime:
    tz = moment.tzinfo
    if tz is not None:
        if type(tz) is timezone:  # a fixed offset (what fromisoformat and %z give): subtract it, much faster
            return (moment - tz.utcoffset(moment)).replace(tzinfo=None)
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def parse_time(value: str | None, field: str) -> datetime | None:
    """ISO 8601 (with or without offset / 'Z'), X's 'Wed Oct 10 20:19:24 +0000 2018', Sentiment140's
    'Mon Apr 06 22:19:45 PDT 2009', Unix seconds, or a bare year (unknown time: None)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)  # the common case, already stripped
    except ValueError:
        pass
    else:
        return moment if moment.tzinfo is None else to_utc_naive(moment)
    v = value.strip()
    if not v:
        return None
    try:
        return to_utc_naive(datetime.fromisoformat(v))
    except ValueError:
        pass
    if v.isdigit():
        if len(v) == 4:
            return None
        try:
            return datetime.fromtimestamp(int(v), UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            raise FieldError(f"{field} is not a time: {v[:40]!r}") from None
    parts = v.split()
    if len(parts) == 6:
        try:
            return to_utc_naive(datetime.strptime(v, "%a %b %d %H:%M:%S %z %Y"))
        except ValueError:
            pass
        if parts[4] in _TZ_NAMES:
            try:
                naive = datetime.strptime(" ".join(parts[:4] + parts[5:]), "%a %b %d %H:%M:%S %Y")
            except ValueError:
                pass
            else:
                return to_utc_naive(naive.replace(tzinfo=timezone(timedelta(hours=_TZ_NAMES[parts[4]]))))
    raise FieldError(f"{field} is not a time: {v[:40]!r}")


def leading_mention(text: str) -> str | None:
    """The handle a post starting with '@handle' replies to (how replies look when no field says so)."""
    if text.startswith("@"):
        m = _LEADING_MENTION.match(text)
        if m:
            return m.group(1)
    return None


def derived_id(author: str, when: str, text: str) -> str:
    """A stable id for exports without ids, so that importing the same file twice adds nothing."""
    digest = hashlib.sha1(f"{author.lower()}\n{when}\n{text}".encode()).hexdigest()
    return f"h{digest[:24]}"


EARLIEST_POST_TIME = datetime(1970, 1, 1)
LATEST_POST_TIME = datetime(2100, 1, 1)
"""A post time outside these is a broken field (a year 99999, a negative or millisecond epoch), not a post."""

MAX_HANDLE_CHARS = 100
"""The store's width for authors and reply handles (Bluesky handles are domain names, up to 253, but none
that long exist); longer is a broken field."""

MAX_LANGUAGE_CHARS = 16


def checked(post: Post, location: str | None = None) -> Post | BadRecord:
    """The checks every post passes whatever its source, so that whatever a file holds the store can take it."""
    created_at, reply_to, language = post.created_at, post.reply_to, post.language
    if (
        post.post_id
        and post.author
        and len(post.text) <= MAX_TEXT_CHARS
        and len(post.post_id) <= POST_ID_LENGTH
        and len(post.author) <= MAX_HANDLE_CHARS
        and (created_at is None or EARLIEST_POST_TIME <= created_at < LATEST_POST_TIME)
        and (reply_to is None or len(reply_to) <= MAX_HANDLE_CHARS)
        and (language is None or len(language) <= MAX_LANGUAGE_CHARS)
    ):
        return post
    return BadRecord(location or f"line {post.record}", _what_is_wrong(post))


def _what_is_wrong(post: Post) -> str:
    if not post.post_id:
        return "empty id"
    if not post.author:
        return "empty author"
    if len(post.text) > MAX_TEXT_CHARS:
        return f"text is {len(post.text):,} characters (longest allowed {MAX_TEXT_CHARS:,})"
    if len(post.post_id) > POST_ID_LENGTH:
        return f"id is {len(post.post_id):,} characters (longest allowed {POST_ID_LENGTH})"
    if len(post.author) > MAX_HANDLE_CHARS:
        return f"author is {len(post.author):,} characters (longest allowed {MAX_HANDLE_CHARS})"
    if post.created_at is not None and not EARLIEST_POST_TIME <= post.created_at < LATEST_POST_TIME:
        return f"time {post.created_at.isoformat(sep=' ')} is not a plausible post time (allowed: 1970 to 2099)"
    if post.reply_to is not None and len(post.reply_to) > MAX_HANDLE_CHARS:
        return f"reply handle is {len(post.reply_to):,} characters (longest allowed {MAX_HANDLE_CHARS})"
    return f"language is {len(post.language or ''):,} characters (longest allowed {MAX_LANGUAGE_CHARS})"
