"""The same store on a real PostgreSQL server: imports, history, rollback, snapshots. CI starts a
server and sets TWEETFORGE_TEST_POSTGRES_URL (see .ci/run); elsewhere these tests are skipped."""

from __future__ import annotations

import os

import pytest

from conftest import STORE_TABLES, archive_tweet, make_archive, shared, table_dump
from tweetforge.ingest import ingest
from tweetforge.sources import ReadOptions, SourceError, open_source
from tweetforge.store.db import engine_for
from tweetforge.store.schema import metadata
from tweetforge.store.snapshots import SnapshotRequest, create_snapshot, read_snapshot

URL = os.environ.get("TWEETFORGE_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="TWEETFORGE_TEST_POSTGRES_URL is not set (CI sets it)")


@pytest.fixture
def pg():
    engine = engine_for(URL)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    yield engine
    metadata.drop_all(engine)


def load(engine, spec, **options):
    return ingest(engine, open_source(str(spec), None, ReadOptions(**options)))


def test_postgres_imports_merge_history_and_snapshot(pg, tmp_path):
    first = load(pg, "example:trump")
    assert (first.new, first.updated) == (20761, 0)
    archive = load(pg, shared("trump_archive.csv"), author="realDonaldTrump")
    assert (archive.new, archive.updated, archive.unchanged) == (2524, 468, 1584)  # the same figures as SQLite
    again = load(pg, shared("trump_archive.csv"), author="realDonaldTrump")
    assert (again.new, again.updated, again.unchanged) == (0, 0, 4576)

    before = table_dump(pg, *STORE_TABLES)
    bad = tmp_path / "bad.zip"
    make_archive(bad, "realDonaldTrump", [[archive_tweet("1", "fine post here today"), {"tweet": {"id_str": "2"}}]])
    with pytest.raises(SourceError, match="record 2: no text field"):
        load(pg, bad)
    assert table_dump(pg, *STORE_TABLES) == before

    snap = create_snapshot(pg, tmp_path / "ds", SnapshotRequest("pg-v1", ("realdonaldtrump",)))
    assert read_snapshot(snap).height == snap.posts > 20000


def test_postgres_stores_and_reuses_evaluations(pg, tmp_path):
    from tweetforge.evaluate import EvalSettings, latest_evaluation, run_evaluations

    load(pg, shared("trump_archive.csv"), author="realDonaldTrump")
    snap = create_snapshot(pg, tmp_path / "ds", SnapshotRequest("pg-eval", ("realDonaldTrump",)))
    settings = EvalSettings(samples=20, seed=1, max_test_posts=50)
    first = run_evaluations(pg, tmp_path, ["markov"], "pg-eval", settings, report_to="none").evaluations[0]
    stored = latest_evaluation(pg, "markov", snap.content_hash, settings)
    assert stored.id == first.id and stored.metrics == first.metrics and len(stored.samples) == 20
    assert run_evaluations(pg, tmp_path, ["markov"], "pg-eval", settings, report_to="none").evaluations[0].id == first.id
