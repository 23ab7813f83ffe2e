from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReadOptions:
    """What a user can tell a source on the command line; every source accepts every option it can use."""

    author: str | None = None
    """Overrides the author of every post (and is required by exports without an author column)."""
    encoding: str | None = None
    """None: the format's own default (UTF-8, Latin-1 for Sentiment140)."""
    network: str = "twitter"
    text_column: str | None = None
    author_column: str | None = None
    id_column: str | None = None
    time_column: str | None = None
