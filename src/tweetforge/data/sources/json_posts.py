"""JSON posts: JSON Lines files (one object a line: X API v1/v2 tweets, twarc output, or any objects
whose fields the user names) and the tweet objects inside an X archive's tweets.js."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tweetforge.data.post import BadRecord, Post
from tweetforge.data.sources.csv_formats import (
    AUTHOR_COLUMNS,
    ID_COLUMNS,
    TEXT_COLUMNS,
    TIME_COLUMNS,
    some_columns,
)
from tweetforge.data.sources.errors import SourceError
from tweetforge.data.sources.fields import (
    FieldError,
    checked,
    leading_mention,
    parse_int,
    parse_time,
)
from tweetforge.data.sources.options import BadRecordCount, ReadOptions
from tweetforge.data.sources.textfile import decoded_lines


def _keep_long_ints(digits: str) -> int | str:
    return int(digits) if len(digits) <= 100 else digits


_PLAIN_JSON = json.JSONDecoder()
_LONG_INTS_JSON = json.JSONDecoder(parse_int=_keep_long_ints)
"""Python converts at most 4,300 digits to an int and raises a ValueError in the middle of a parse; a file
with a longer number is parsed again keeping such numbers as their digits, which then fail as fields."""


def raw_decode_json(text: str, start: int = 0) -> tuple[Any, int]:
    """json's raw_decode, with numbers of any length. Raises JSONDecodeError, and RecursionError when the
    value is nested too deeply."""
    try:
        return _PLAIN_JSON.raw_decode(text, start)
    except json.JSONDecodeError:
        raise
    except ValueError:
        return _LONG_INTS_JSON.raw_decode(text, start)


def loads_json(text: str) -> Any:
    """json.loads, with numbers of any length."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        return _LONG_INTS_JSON.decode(text)


def _first_key(obj: dict[str, Any], chosen: str | None, candidates: tuple[str, ...]) -> str | None:
    if chosen is not None:
        return chosen if chosen in obj else None
    for key in candidates:
        if key in obj:
            return key
    return None


def _author_of(obj: dict[str, Any], options: ReadOptions, default_author: str | None) -> str | None:
    if options.author:
        return options.author.lstrip("@")
    key = _first_key(obj, options.author_column, AUTHOR_COLUMNS)
    if key is not None and isinstance(obj[key], str):
        return obj[key].lstrip("@")
    user = obj.get("user")
    if isinstance(user, dict) and isinstance(user.get("screen_name"), str):
        return user["screen_name"]
    return default_author


def json_object_to_post(
    obj: Any, options: ReadOptions, record: int, location: str, default_author: str | None = None
) -> Post | BadRecord:
    if not isinstance(obj, dict):
        return BadRecord(location, f"expected a JSON object, found {type(obj).__name__}")
    text_key = _first_key(obj, options.text_column, ("full_text",) + TEXT_COLUMNS)
    if text_key is None or not isinstance(obj[text_key], str):
        wanted = options.text_column or "/".join(("full_text",) + TEXT_COLUMNS)
        return BadRecord(location, f"no text field {wanted!r} (fields: {some_columns(list(obj))}); pass --text-column NAME")
    text: str = obj[text_key]
    author = _author_of(obj, options, default_author)
    if not author:
        return BadRecord(location, "no author field; pass --author-column NAME or --author HANDLE")
    id_key = _first_key(obj, options.id_column, ("id_str",) + ID_COLUMNS)
    if id_key is None or obj[id_key] in (None, ""):
        return BadRecord(location, "no id field; pass --id-column NAME")
    if type(obj[id_key]) not in (str, int):
        return BadRecord(location, f"{id_key} is a {type(obj[id_key]).__name__}, not a string or a whole number")
    time_key = _first_key(obj, options.time_column, TIME_COLUMNS)
    reply_to = obj.get("in_reply_to_screen_name")
    if not isinstance(reply_to, str) or not reply_to:
        replying = obj.get("in_reply_to_status_id_str") or obj.get("in_reply_to_status_id") or obj.get("in_reply_to_user_id")
        reply_to = leading_mention(text) or ("" if replying else None)
    try:
        post = Post(
            network=options.network,
            post_id=str(obj[id_key]),
            author=author,
            text=text,
            created_at=parse_time(_scalar(obj[time_key], time_key), time_key) if time_key and obj[time_key] is not None else None,
            is_retweet=text.startswith("RT @") or "retweeted_status" in obj,
            reply_to=reply_to,
            likes=parse_int(_scalar(obj.get("favorite_count", obj.get("like_count")), "favorite_count"), "favorite_count"),
            reposts=parse_int(_scalar(obj.get("retweet_count", obj.get("repost_count")), "retweet_count"), "retweet_count"),
            language=obj.get("lang") if isinstance(obj.get("lang"), str) else None,
            record=record,
        )
    except FieldError as exc:
        return BadRecord(location, str(exc))
    if _UNSTORABLE.search(text) or _UNSTORABLE.search(f"{post.post_id}{author}{reply_to or ''}{post.language or ''}"):
        return BadRecord(location, "contains a NUL character or a lone surrogate (an escape like \\u0000 or \\ud800): not text")
    return checked(post, location)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""What JSON escapes can put in a string but no text column stores (PostgreSQL refuses NUL, UTF-8 has no surrogates)."""


def _scalar(value: Any, field: str) -> str | None:
    """A field's value as text to parse: a nested object or array is not a number or a time (and printing it
    could recurse as deep as the JSON does)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise FieldError(f"{field} is a JSON {'object' if isinstance(value, dict) else 'array'}, not a value")


def read_jsonl_posts(path: Path, options: ReadOptions) -> Iterator[Post | BadRecord]:
    where = str(path)
    counted = BadRecordCount(where, options.limits)
    any_lines = False
    for number, line in enumerate(decoded_lines(path, options.encoding or "utf-8", options.limits.max_line_bytes), start=1):
        if not line.strip():
            continue
        any_lines = True
        try:
            post = json_object_to_post(loads_json(line), options, number, f"line {number}")
        except json.JSONDecodeError as exc:
            post = BadRecord(f"line {number}", f"not valid JSON: {exc.msg} at column {exc.colno}")
        except RecursionError:
            post = BadRecord(f"line {number}", "JSON nested too deeply (hundreds of levels): not a post")
        if type(post) is BadRecord:
            counted(post)
        yield post
    if not any_lines:
        raise SourceError(where, "file has no posts (only blank lines)")
