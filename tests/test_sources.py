"""Each source yields the posts of a real export, with the format detected from content."""

from __future__ import annotations

import csv
from datetime import datetime

import pytest

from conftest import archive_tweet, make_archive, shared
from tweetforge.data.post import BadRecord, Post
from tweetforge.data.sources import ReadOptions, SourceError, open_source


def read_all(spec, fmt=None, **options) -> list[Post]:
    items = list(open_source(str(spec), fmt, ReadOptions(**options)).posts())
    bad = [i for i in items if isinstance(i, BadRecord)]
    assert not bad, bad[:3]
    return items


def test_kaggle_export_every_row_with_utc_times_and_replies():
    path = shared("elonmusk_kaggle_2021.csv")
    assert open_source(str(path)).format == "kaggle"
    posts = read_all(path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(posts) == len(rows) == 3115
    assert {p.author for p in posts} == {"elonmusk"}
    first = posts[0]
    assert first.post_id == "1476662222617251846"
    assert first.created_at == datetime(2021, 12, 30, 21, 11, 23)  # 01:11:23 at +0400
    assert first.reply_to == "roshanpateI"
    assert first.likes == 13468 and first.reposts == 364 and first.language == "und"
    # twint's reply_to list, or (where it is empty) a post that starts by addressing someone
    assert sum(p.is_reply for p in posts) == sum(1 for r in rows if r["reply_to"] != "[]" or r["tweet"].startswith("@"))


def test_elon_cleaned_csv_needs_author_and_derives_stable_ids():
    path = shared("elonmusk_cleaned.csv")
    assert open_source(str(path)).format == "elon-cleaned"
    with pytest.raises(SourceError, match="no author column: pass --author"):
        list(open_source(str(path)).posts())
    first, second = read_all(path, author="elonmusk"), read_all(path, author="elonmusk")
    assert len(first) == 15860
    assert [p.post_id for p in first] == [p.post_id for p in second]
    assert len({p.post_id for p in first}) == len({(p.text, p.created_at) for p in first})
    assert first[1].reply_to == "kimpaquette"


def test_trump_archive_booleans_and_author_override():
    path = shared("trump_archive.csv")
    assert open_source(str(path)).format == "trump-archive"
    posts = read_all(path, author="@realDonaldTrump")
    assert len(posts) == 4576
    assert {p.author for p in posts} == {"realDonaldTrump"}
    assert sum(p.is_retweet for p in posts) == sum(1 for p in posts if p.text.startswith("RT @"))
    assert posts[0].created_at == datetime(2016, 4, 9, 21, 29, 18)


def test_bare_year_date_is_an_unknown_time(tmp_path):
    path = tmp_path / "archive.csv"
    path.write_text("id,text,isRetweet,isDeleted,device,favorites,retweets,date\n1,Hello there my friends,f,f,web,1,2,2013\n")
    (post,) = read_all(path, author="someone")
    assert post.created_at is None


def test_sentiment140_latin1_many_authors(tmp_path):
    path = tmp_path / "training.1600000.processed.noemoticon.csv"
    lines = [
        '"0","1467810369","Mon Apr 06 22:19:45 PDT 2009","NO_QUERY","_TheSpecialOne_","@switchfoot http://twitpic.com/2y1zl - Awww, caf\xe9"',
        '"4","1467822272","Mon Apr 06 22:22:45 PDT 2009","NO_QUERY","ersle","I LOVE @Health4UandPets u guys r the best!! "',
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    assert open_source(str(path)).format == "sentiment140"
    posts = read_all(path)
    assert [p.author for p in posts] == ["_TheSpecialOne_", "ersle"]
    assert posts[0].text.endswith("café")
    assert posts[0].created_at == datetime(2009, 4, 7, 5, 19, 45)  # PDT is UTC-7
    assert posts[0].reply_to == "switchfoot"


def test_x_archive_zip_folder_and_data_folder(tmp_path):
    parts = [
        [
            archive_tweet("100", "Launch went well &amp; more soon https://t.co/x"),
            archive_tweet("101", "RT @nasa: liftoff of the rocket today", created_at="Thu Oct 11 08:00:00 +0000 2018"),
        ],
        [archive_tweet("102", "@bob thanks, agreed on all of it", in_reply_to_screen_name="bob")],
    ]
    zipped = make_archive(tmp_path / "twitter-2024-01-01.zip", "rocketfan", parts)
    folder = tmp_path / "unzipped"
    make_archive(folder, "rocketfan", parts, as_zip=False)
    for spec in (zipped, folder, folder / "data"):
        source = open_source(str(spec))
        assert source.format == "x-archive"
        posts = read_all(spec)
        assert [p.post_id for p in posts] == ["100", "101", "102"]
        assert {p.author for p in posts} == {"rocketfan"}
        assert posts[0].text == "Launch went well &amp; more soon https://t.co/x"  # raw; cleaning decodes
        assert posts[0].created_at == datetime(2018, 10, 10, 20, 19, 24)
        assert posts[0].likes == 12 and posts[0].reposts == 3
        assert posts[1].is_retweet and not posts[0].is_retweet
        assert posts[2].reply_to == "bob"


def test_jsonl_and_generic_csv_with_named_columns(tmp_path):
    jsonl = tmp_path / "posts.jsonl"
    jsonl.write_text(
        '{"uri": "at://a/1", "record_text": "first post on the new network", "handle": "alice.bsky.social", "ts": "2024-05-01T10:00:00Z"}\n'
        "\n"
        '{"uri": "at://a/2", "record_text": "second post, still here", "handle": "alice.bsky.social", "ts": "2024-05-02T10:00:00Z"}\n'
    )
    posts = read_all(jsonl, text_column="record_text", author_column="handle", id_column="uri", time_column="ts", network="bluesky")
    expected = [("bluesky", "at://a/1", "alice.bsky.social"), ("bluesky", "at://a/2", "alice.bsky.social")]
    assert [(p.network, p.post_id, p.author) for p in posts] == expected
    assert posts[1].created_at == datetime(2024, 5, 2, 10, 0)

    generic = tmp_path / "toots.csv"
    generic.write_text("status,who,when\nhello fediverse friends,@carol,2023-01-01 12:00:00\n")
    assert open_source(str(generic)).format == "csv"
    (post,) = read_all(generic, text_column="status", author_column="who")
    assert post.author == "carol" and post.post_id.startswith("h") and post.created_at is None
    (post,) = read_all(generic, text_column="status", author_column="who", time_column="when")
    assert post.created_at == datetime(2023, 1, 1, 12, 0)


def test_example_timeline_is_the_real_one():
    posts = read_all("example:trump")
    assert len(posts) == 20761
    assert {p.author for p in posts} == {"realDonaldTrump"}
    assert len({p.post_id for p in posts}) == 20761


def test_format_override_and_unknown_format(tmp_path):
    with pytest.raises(SourceError, match="unknown format 'tweets'"):
        open_source(str(shared("trump_archive.csv")), "tweets")
    source = open_source(str(shared("trump_archive.csv")), "csv", ReadOptions(author="realDonaldTrump"))
    assert source.format == "csv"
    assert len([p for p in source.posts() if isinstance(p, Post)]) == 4576
