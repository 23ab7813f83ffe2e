"""Cleaning rules on hand-made cases, and the stats identity on the real exports."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest

from conftest import shared
from tweetforge.data.clean import CleaningRules, clean, cleaning_stats
from tweetforge.data.ingest import ingest
from tweetforge.data.sources import ReadOptions, open_source
from tweetforge.data.store import POST_FRAME_SCHEMA, read_posts


def frame(*posts: dict) -> pl.DataFrame:
    rows = []
    for i, p in enumerate(posts):
        rows.append(
            {
                "network": "twitter",
                "post_id": str(i),
                "author": p.get("author", "ann"),
                "text": p["text"],
                "created_at": p.get("created_at", datetime(2020, 1, 1, 0, i)),
                "is_retweet": p.get("is_retweet", False),
                "reply_to": p.get("reply_to"),
                "likes": None,
                "reposts": None,
                "language": p.get("language"),
            }
        )
    return pl.DataFrame(rows, schema=POST_FRAME_SCHEMA)


def cleaned(rules=CleaningRules(), *posts):
    out = clean(frame(*posts), rules)
    return list(zip(out["text"].to_list(), out["drop_reason"].to_list()))


def test_default_rules_decode_remove_urls_collapse_whitespace():
    result = cleaned(
        CleaningRules(),
        {"text": "Jobs &amp; growth &gt; promises!  https://t.co/abc123\n\nSee www.example.com now"},
        {"text": "RT @nasa: we have liftoff of the big rocket", "is_retweet": True},
        {"text": "Great! https://t.co/x #MAGA @someone"},
        {"text": "@a @b Yes indeed sir", "reply_to": "a"},
    )
    assert result == [
        ("Jobs & growth > promises! See now", None),
        ("RT @nasa: we have liftoff of the big rocket", "retweet"),
        ("Great! #MAGA @someone", "short"),  # one word that is not a link, mention or hashtag
        ("@a @b Yes indeed sir", None),
    ]


def test_options_replies_mentions_newlines_language():
    posts = (
        {"text": "@a @b Yes indeed sir, great point", "reply_to": "a"},
        {"text": "Line one here\n\n\n  line two   there", "language": "en"},
        {"text": "Bonjour à tous mes amis", "language": "fr"},
        {"text": "Thanks @bob and @carol for the help"},
    )
    assert [r for _, r in cleaned(CleaningRules(drop_replies=True), *posts)] == ["reply", None, None, None]
    assert cleaned(CleaningRules(strip_reply_mentions=True), *posts)[0] == ("Yes indeed sir, great point", None)
    assert cleaned(CleaningRules(mention_placeholder="@user"), *posts)[3] == ("Thanks @user and @user for the help", None)
    assert cleaned(CleaningRules(keep_newlines=True), *posts)[1] == ("Line one here\n\nline two there", None)
    assert cleaned(CleaningRules(), *posts)[1] == ("Line one here line two there", None)
    assert [r for _, r in cleaned(CleaningRules(languages=("en",)), *posts)] == [None, None, "language", None]


def test_duplicates_keep_the_earliest_post_per_author():
    out = clean(
        frame(
            {"text": "Same words again and again", "created_at": datetime(2021, 1, 2)},
            {"text": "Same words again and again", "created_at": datetime(2021, 1, 1)},
            {"text": "Same words again and again", "author": "bob"},
            {"text": "Same   words again and again https://t.co/z", "created_at": datetime(2021, 1, 3)},
        ),
        CleaningRules(),
    )
    assert out["drop_reason"].to_list() == ["duplicate", None, None, "duplicate"]
    assert clean(frame({"text": "a b c d"}, {"text": "a b c d"}), CleaningRules(drop_duplicates=False))["drop_reason"].to_list() == [None, None]


@pytest.mark.parametrize(
    "name,options",
    [("elonmusk_kaggle_2021.csv", {}), ("elonmusk_cleaned.csv", {"author": "elonmusk"}), ("trump_archive.csv", {"author": "realDonaldTrump"})],
)
def test_stats_add_up_on_real_exports(engine, name, options):
    result = ingest(engine, open_source(str(shared(name)), None, ReadOptions(**options)))
    with engine.connect() as conn:
        posts = read_posts(conn)
    for rules in (CleaningRules(), CleaningRules(drop_replies=True, languages=("en",))):
        (row,) = cleaning_stats(clean(posts, rules))
        assert row["downloaded"] == result.new
        assert row["downloaded"] == (
            row["retweets"] + row["replies_dropped"] + row["other_language"] + row["short"] + row["duplicates"] + row["kept"]
        )
        assert 0 < row["kept"] < row["downloaded"]
        assert row["characters_kept"] > row["kept"] * 10
    if name == "trump_archive.csv":
        assert row["retweets"] == 15  # the 15 'RT @' posts; the isRetweet column is all 'f'
