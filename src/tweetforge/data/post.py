"""The record every source yields and every stage reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

MAX_POST_CHARS = 280
"""The length a generated post is held to (X's limit for most accounts)."""

MAX_TEXT_CHARS = 25_000
"""Longest post any network allows (X Premium long posts); longer text is a broken record."""


@dataclass(slots=True)
class Post:
    network: str
    """'twitter', 'bluesky', 'mastodon' or what a generic file says; with post_id the identity."""
    post_id: str
    author: str
    """Handle without '@'."""
    text: str
    """As exported: HTML entities, URLs and mentions still in; cleaning happens at snapshot time."""
    created_at: datetime | None = None
    """Naive UTC."""
    is_retweet: bool = False
    reply_to: str | None = None
    """Handle replied to; '' when the post is a reply to someone unknown."""
    likes: int | None = None
    reposts: int | None = None
    language: str | None = None
    record: int = 0
    """Line (CSV, JSONL) or record number (archives) in the source, for error messages."""

    @property
    def is_reply(self) -> bool:
        return self.reply_to is not None


@dataclass(slots=True)
class BadRecord:
    """A record a source could not read; an import stops on it unless asked to skip bad records."""

    location: str
    """'line 12', or 'data/tweets-part1.js record 3' for archives."""
    reason: str
