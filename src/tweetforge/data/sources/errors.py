from __future__ import annotations

from tweetforge.errors import TweetforgeError


def one_line(text: str) -> str:
    """Text with line breaks and other control characters escaped: names taken from a hostile file (ZIP
    entries, CSV columns) must not break an error onto several lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class SourceError(TweetforgeError):
    """A source that cannot be read: the message names the file, the line or record, and what is wrong."""

    def __init__(self, where: str, what: str, line: int | None = None, record: int | None = None):
        self.where = where
        self.what = what
        self.line = line
        self.record = record
        location = where
        if line is not None:
            location += f", line {line}"
        elif record is not None:
            location += f", record {record}"
        super().__init__(one_line(f"{location}: {what}"))
