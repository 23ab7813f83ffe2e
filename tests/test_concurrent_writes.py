"""One SQLite store, several writers: an import reads and stages without the store's write lock, waits (and
says so) for another writer only to merge, and a record never rewrites another author's post."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator

from sqlalchemy import select

from conftest import STORE_TABLES, run_cli, shared, table_dump
from tweetforge.data.ingest import ingest
from tweetforge.data.post import Post
from tweetforge.data.sources import ReadOptions, Source, open_source
from tweetforge.db.engine import engine_for
from tweetforge.db.schema import optouts, posts


class PausingSource(Source):
    """A CSV source that stops half-way through its records until released, like a long import."""

    def __init__(self, inner: Source, halfway: threading.Event, release: threading.Event) -> None:
        self.__dict__.update(inner.__dict__)
        self.inner, self.halfway, self.release = inner, halfway, release

    def posts(self) -> Iterator[Post]:
        for n, item in enumerate(self.inner.posts()):
            if n == 500:
                self.halfway.set()
                assert self.release.wait(30)
            yield item


def test_an_import_reading_its_file_does_not_lock_the_store(tmp_path):
    database = tmp_path / "store.db"
    engine = engine_for(f"sqlite:///{database}")
    halfway, release = threading.Event(), threading.Event()
    source = PausingSource(open_source(str(shared("trump_archive.csv")), None, ReadOptions(author="realDonaldTrump")), halfway, release)
    importing = threading.Thread(target=lambda: ingest(engine, source))
    importing.start()
    assert halfway.wait(60)
    # Another process writes while the import is half-way through its file, without waiting at all.
    other = sqlite3.connect(database, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO optouts (handle, reason, added_at) VALUES ('someone', 'asked', '2026-12-07 00:00:00')")
    other.execute("COMMIT")
    release.set()
    importing.join(60)
    with engine.connect() as conn:
        assert conn.execute(select(optouts.c.handle)).scalars().all() == ["someone"]
        assert conn.execute(select(posts.c.author).distinct()).scalars().all() == ["realDonaldTrump"]


HOLD_LOCK = """
import sqlite3, sys, time
held = sqlite3.connect(sys.argv[1], isolation_level=None)
held.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
held.execute("COMMIT")
"""


def test_an_import_waits_for_another_writer_and_says_so(tmp_path):
    home = tmp_path / ".tweetforge"
    run_cli(home, "optout", "list")  # creates the store
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(home / "tweetforge.db"), "3"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    imported = run_cli(home, "ingest", str(shared("trump_archive.csv")), "--author", "realDonaldTrump")
    holder.wait(10)
    assert "waiting for the store: another process is writing to it" in imported.stderr
    assert "Imported" in imported.stdout and "Traceback" not in imported.stderr


def test_a_store_locked_for_too_long_is_one_line_and_changes_nothing(tmp_path, monkeypatch):
    import tweetforge.data.ingest as ingest_module

    home = tmp_path / ".tweetforge"
    run_cli(home, "ingest", str(shared("elonmusk_kaggle_2021.csv")))
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    before = table_dump(engine, *STORE_TABLES)
    monkeypatch.setattr(ingest_module, "MERGE_WAIT_S", 1)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(home / "tweetforge.db"), "6"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    refused = run_cli(home, "ingest", str(shared("trump_archive.csv")), "--author", "realDonaldTrump", check=False)
    holder.wait(10)
    assert refused.returncode == 1
    assert "the store stayed locked by another writer for 1 s; nothing was written, run it again" in refused.stderr
    assert table_dump(engine, *STORE_TABLES) == before


def test_an_id_never_changes_author(tmp_path):
    home = tmp_path / ".tweetforge"
    run_cli(home, "ingest", str(shared("trump_archive.csv")), "--author", "realDonaldTrump")
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    before = table_dump(engine, *STORE_TABLES)
    forged = tmp_path / "forged.csv"
    forged.write_text("id,author,text\n"
                      "718913705111613440,mallory,Rewriting someone else's post through its id\n"
                      "1,mallory,A post of my own with an id nobody has\n")
    options = ("--id-column", "id", "--author-column", "author", "--text-column", "text")
    refused = run_cli(home, "ingest", str(forged), *options, check=False)
    assert refused.returncode == 1
    assert "twitter post 718913705111613440 is stored as @realDonaldTrump's, this source gives it to @mallory" in refused.stderr
    assert table_dump(engine, *STORE_TABLES) == before
    skipped = run_cli(home, "ingest", str(forged), *options, "--skip-bad")
    assert "1 new" in skipped.stdout and "@mallory (1)" in skipped.stdout
    with engine.connect() as conn:
        stored = conn.execute(select(posts.c.author, posts.c.text).where(posts.c.post_id == "718913705111613440")).one()
    assert stored.author == "realDonaldTrump" and stored.text.startswith("A great honor to visit the 9/11 Memorial")


def logged_generation(engine) -> str:  # type: ignore[no-untyped-def]
    """The id of a generation in the log, for feedback to name."""
    import datetime
    import uuid

    from sqlalchemy import insert

    from tweetforge.db.schema import generations

    generation = str(uuid.uuid4())
    with engine.connect() as conn, conn.begin():
        conn.execute(insert(generations).values(id=generation, created_at=datetime.datetime.now(), model_name="m", model_version=1,
                                                prompt="", params={}, posts=[]))
    return generation


def test_feedback_written_from_many_threads_while_a_large_import_runs_is_never_refused(tmp_path):
    import csv

    from sqlalchemy import func

    from tweetforge.db.schema import feedback
    from tweetforge.experiments.ab import record_feedback

    home = tmp_path / ".tweetforge"
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    generation = logged_generation(engine)
    big = tmp_path / "big.csv"
    with big.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "author", "text"])
        writer.writerows([10**12 + i, "bigauthor", f"post number {i} about the crowd, the vote and the deal"] for i in range(80_000))
    env = {**os.environ, "TWEETFORGE_HOME": str(home)}
    env.pop("TWEETFORGE_DATABASE_URL", None)
    importing = subprocess.Popen([sys.executable, "-m", "tweetforge", "ingest", str(big), "--id-column", "id", "--author-column", "author",
                                  "--text-column", "text"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    acknowledged, refused = [], []

    def give_feedback() -> None:
        while importing.poll() is None:
            try:
                acknowledged.append(record_feedback(engine, generation, "like"))
            except Exception as error:  # noqa: BLE001 - any refusal is what this test counts
                refused.append(repr(error))

    writers = [threading.Thread(target=give_feedback) for _ in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(300)
    assert importing.wait() == 0, importing.stderr.read()
    assert refused == [] and len(acknowledged) > 50
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(feedback)).scalar() == len(acknowledged)
        assert conn.execute(select(func.count()).select_from(posts)).scalar() == 80_000


def test_the_service_answers_503_with_retry_after_while_the_store_stays_locked(tmp_path, monkeypatch):

    from fastapi.testclient import TestClient

    import tweetforge.db.engine as engine_module
    from tweetforge.serving.app import create_app
    from tweetforge.serving.service import Service, ServiceSettings

    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_MS", 1000)  # the service's wait, 30 s by default
    database = tmp_path / "store.db"
    engine = engine_for(f"sqlite:///{database}")
    generation = logged_generation(engine)
    client = TestClient(create_app(Service(engine, ServiceSettings(models=[]))))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(database), "4"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    refused = client.post("/v1/feedback", json={"generation_id": generation, "event": "like"})
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
    assert refused.json()["error"]["code"] == "store_busy"
    holder.wait(10)
    assert client.post("/v1/feedback", json={"generation_id": generation, "event": "like"}).status_code == 200
