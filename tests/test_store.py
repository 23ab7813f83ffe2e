"""The store: idempotent imports, one post remembered by every import, edit history, transactions,
skipped records, opt-outs."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from conftest import STORE_TABLES, archive_tweet, make_archive, shared, table_dump
from tweetforge.data.ingest import ingest
from tweetforge.data.optout import add_optout, list_optouts, remove_optout
from tweetforge.data.sources import ReadOptions, SourceError, open_source
from tweetforge.data.store import read_posts
from tweetforge.db.schema import (
    import_skips,
    imports,
    post_history,
    post_imports,
    posts,
)


def load(engine, spec, fmt=None, skip_bad=False, **options):
    return ingest(engine, open_source(str(spec), fmt, ReadOptions(**options)), skip_bad=skip_bad)


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_reimport_adds_nothing_and_every_run_is_recorded(engine):
    first = load(engine, shared("elonmusk_kaggle_2021.csv"))
    assert (first.records, first.new, first.updated) == (3115, 3115, 0)
    second = load(engine, shared("elonmusk_kaggle_2021.csv"))
    assert (second.new, second.updated, second.unchanged) == (0, 0, 3115)
    assert count(engine, posts) == 3115
    with engine.connect() as conn:
        runs = conn.execute(select(imports).order_by(imports.c.id)).all()
    assert [r.new for r in runs] == [3115, 0]
    assert runs[0].file_hash == runs[1].file_hash and len(runs[0].file_hash) == 64
    assert runs[0].format == "kaggle" and runs[0].duration_s > 0


def test_same_post_from_archive_and_kaggle_is_one_post_remembering_both(engine, tmp_path):
    load(engine, shared("elonmusk_kaggle_2021.csv"))
    archive = make_archive(
        tmp_path / "archive.zip", "elonmusk", [[archive_tweet("1476662222617251846", "@roshanpateI 🤣 $7")]]
    )
    result = load(engine, archive)
    assert (result.new, result.unchanged) == (0, 1)
    with engine.connect() as conn:
        seen_by = conn.execute(
            select(post_imports.c.import_id).where(post_imports.c.post_id == "1476662222617251846")
        ).scalars().all()
    assert sorted(seen_by) == [1, 2]


def test_edited_text_updates_and_keeps_old_text_in_history(engine, tmp_path):
    make_archive(tmp_path / "a.zip", "someone", [[archive_tweet("7", "Original words of a post")]])
    make_archive(tmp_path / "b.zip", "someone", [[archive_tweet("7", "Edited words of a post")]])
    load(engine, tmp_path / "a.zip")
    result = load(engine, tmp_path / "b.zip")
    assert (result.new, result.updated) == (0, 1)
    with engine.connect() as conn:
        assert conn.execute(select(posts.c.text)).scalar_one() == "Edited words of a post"
        old = conn.execute(select(post_history.c.text, post_history.c.replaced_by_import_id)).one()
    assert tuple(old) == ("Original words of a post", 2)


def test_a_bad_record_late_in_a_file_leaves_the_store_exactly_as_it_was(engine, tmp_path):
    load(engine, shared("trump_archive.csv"), author="realDonaldTrump")
    before = table_dump(engine, *STORE_TABLES)
    rows = shared("elonmusk_kaggle_2021.csv").read_text(encoding="utf-8").splitlines()
    broken = rows[:2000] + [rows[2000].replace(",13468,", ",lots,", 1).replace("elonmusk,Elon Musk,", "elonmusk,Elon Musk,,extra,", 1)] + rows[2001:]
    bad = tmp_path / "kaggle.csv"
    bad.write_text("\n".join(broken) + "\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"kaggle\.csv.*line 2001: has 38 fields, expected 36"):
        load(engine, bad)
    assert table_dump(engine, *STORE_TABLES) == before


def test_skip_bad_imports_the_good_records_and_lists_the_bad(engine, tmp_path):
    path = tmp_path / "posts.csv"
    path.write_text(
        "id,text,author,created_at\n"
        "1,a perfectly fine post here,ann,2024-01-01T00:00:00\n"
        "2,a post with a broken time,ann,yesterday-ish\n"
        "3,another fine post right here,ann,2024-01-03T00:00:00\n"
        "4,too,many,fields,here\n"
    )
    with pytest.raises(SourceError, match="line 3: created_at is not a time: 'yesterday-ish'"):
        load(engine, path)
    result = load(engine, path, skip_bad=True)
    assert result.new == 2
    assert [(b.location, b.reason) for b in result.skipped] == [
        ("line 3", "created_at is not a time: 'yesterday-ish'"),
        ("line 5", "has 5 fields, expected 4"),
    ]
    with engine.connect() as conn:
        assert conn.execute(select(import_skips.c.location).order_by(import_skips.c.n)).scalars().all() == ["line 3", "line 5"]
        assert conn.execute(select(imports.c.skipped)).scalar_one() == 2


def test_duplicate_id_with_different_text_in_one_file(engine, tmp_path):
    path = tmp_path / "dupes.csv"
    path.write_text("id,text,author\n1,the first version of it,ann\n2,something else entirely,ann\n1,a second version of it,ann\n")
    with pytest.raises(SourceError, match="line 4: id 1 already appeared at line 2 with a different text"):
        load(engine, path)
    assert count(engine, posts) == 0
    result = load(engine, path, skip_bad=True)
    assert result.new == 2 and len(result.skipped) == 1


def test_optout_refuses_at_import_and_excludes_from_reads(engine, tmp_path):
    load(engine, shared("elonmusk_kaggle_2021.csv"))
    load(engine, shared("trump_archive.csv"), author="realDonaldTrump")
    add_optout(engine, "@ElonMusk", reason="asked by email")
    assert [o["handle"] for o in list_optouts(engine)] == ["elonmusk"]
    with engine.connect() as conn:
        assert set(read_posts(conn)["author"].unique()) == {"realDonaldTrump"}
    with pytest.raises(SourceError, match="all 3,115 posts are by opted-out authors"):
        load(engine, shared("elonmusk_kaggle_2021.csv"))
    deleted = add_optout(engine, "elonmusk", purge=True)
    assert deleted == 3115 and count(engine, posts) == 4576
    assert remove_optout(engine, "elonmusk")
    assert load(engine, shared("elonmusk_kaggle_2021.csv")).new == 3115
