"""Every bad input gets a clear one-line error naming the file and the line or record, and the store
stays exactly as it was. Run through the real CLI in a subprocess."""

from __future__ import annotations

import re
import shutil
import zipfile

import pytest
from sqlalchemy import text

from conftest import STORE_TABLES, archive_tweet, run_cli, shared, table_dump, ytd
from tweetforge.data.ingest import ingest
from tweetforge.data.sources import ReadOptions, open_source
from tweetforge.db.engine import engine_for


def empty_file(d):
    (d / "empty.csv").write_text("")
    return ["empty.csv"], r"empty\.csv: file is empty"


def binary_file(d):
    (d / "photo.csv").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    return ["photo.csv"], r"photo\.csv: binary file"


def latin1_without_encoding(d):
    (d / "latin.csv").write_bytes("id,text,author\n1,Un caf\xe9 tr\xe8s bon ce matin,ann\n".encode("latin-1"))
    return ["latin.csv"], r"latin\.csv, line 2: byte 0xe9 is not valid utf-8 \(pass --encoding latin-1"


def csv_missing_text_column(d):
    (d / "notext.csv").write_text("id,author,created_at\n1,ann,2024-01-01\n")
    return ["notext.csv"], r"notext\.csv, line 1: CSV header has no text column .*columns: id, author, created_at.*--text-column"


def truncated_tweets_js(d):
    full = ytd("tweets", [archive_tweet(str(i), f"post number {i} is here") for i in range(20)])
    (d / "tweets.js").write_text(full[: len(full) // 2])
    return ["tweets.js", "--author", "ann"], r"tweets\.js, line \d+: truncated JSON"


def ten_megabyte_line(d):
    (d / "huge.csv").write_text("id,text,author\n1," + "x" * 10_000_000 + ",ann\n")
    return ["huge.csv"], r"huge\.csv, line 2: line is longer than 1,000,000 bytes \(limit TWEETFORGE_IMPORT_MAX_LINE_BYTES\)"


def nul_bytes(d):
    (d / "nul.csv").write_bytes(b"id,text,author\n1,fine post with words,ann\n2,broken\x00post here,ann\n")
    return ["nul.csv"], r"nul\.csv, line 3: contains a NUL byte"


def duplicate_ids_different_text(d):
    (d / "dupes.csv").write_text("id,text,author\n9,the first text of it,ann\n9,the second text of it,ann\n")
    return ["dupes.csv"], r"dupes\.csv: line 3: id 9 already appeared at line 2 with a different text"


def zip_without_tweets_js(d):
    with zipfile.ZipFile(d / "twitter-archive.zip", "w") as z:
        z.writestr("data/account.js", ytd("account", [{"account": {"username": "ann"}}]))
        z.writestr("data/like.js", ytd("like", []))
    return ["twitter-archive.zip"], r"twitter-archive\.zip: no data/tweets\.js in this archive"


def path_that_does_not_exist(d):
    return ["nowhere/tweets.csv"], r"nowhere/tweets\.csv: no such file or directory"


CASES = [
    empty_file,
    binary_file,
    latin1_without_encoding,
    csv_missing_text_column,
    truncated_tweets_js,
    ten_megabyte_line,
    nul_bytes,
    duplicate_ids_different_text,
    zip_without_tweets_js,
    path_that_does_not_exist,
]


@pytest.fixture(scope="module")
def populated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("populated") / ".tweetforge"
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    ingest(engine, open_source(str(shared("trump_archive.csv")), None, ReadOptions(author="realDonaldTrump")))
    engine.dispose()
    return home


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_one_line_error_and_store_unchanged(case, populated_home, tmp_path):
    home = tmp_path / ".tweetforge"
    shutil.copytree(populated_home, home)
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    before = table_dump(engine, *STORE_TABLES)
    args, expected = case(tmp_path)
    result = run_cli(home, "ingest", *args, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert re.search(expected, lines[0]), lines[0]
    assert table_dump(engine, *STORE_TABLES) == before
    engine.dispose()


def test_latin1_file_imports_with_encoding(tmp_path):
    (tmp_path / "latin.csv").write_bytes("id,text,author\n1,Un caf\xe9 tr\xe8s bon ce matin,ann\n".encode("latin-1"))
    home = tmp_path / ".tweetforge"
    out = run_cli(home, "ingest", "latin.csv", "--encoding", "latin-1", "--json")
    assert '"new": 1' in out.stdout


def test_stats_plot_leaves_out_stored_dates_no_axis_can_show(tmp_path):
    home = tmp_path / ".tweetforge"
    run_cli(home, "ingest", str(shared("elonmusk_kaggle_2021.csv")))
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    with engine.connect() as conn, conn.begin():  # a store written before imports checked dates, or edited by hand
        conn.execute(text("UPDATE posts SET created_at = '9999-12-31 23:59:59.000000' WHERE post_id = "
                          "(SELECT post_id FROM posts ORDER BY post_id LIMIT 1)"))
    run_cli(home, "stats", "--plot", str(tmp_path / "stats.png"))
    assert (tmp_path / "stats.png").stat().st_size > 20_000
