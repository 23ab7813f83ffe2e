"""Live sources against a local server that answers as Bluesky, Mastodon and the X API do, through the
real client libraries: pagination, incremental syncs, edits, deletions, rate limits, faults, a kill -9
in the middle of a sync, concurrent syncs and the bearer token kept secret."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from conftest import archive_tweet, make_archive, run_cli, table_dump
from fake_networks import X_TOKEN, FakeNetworks, Fault
from tweetforge.config import get_settings
from tweetforge.data.ingest import ingest
from tweetforge.data.snapshots import SnapshotRequest, create_snapshot
from tweetforge.data.sources import open_source
from tweetforge.data.sources.live import LiveError, parse_handle, rate_limit_wait
from tweetforge.data.sync import SyncLocked, followed, sync_account
from tweetforge.db.schema import imports, post_history, posts, sources


@pytest.fixture
def net(monkeypatch):
    monkeypatch.setenv("TWEETFORGE_X_BEARER_TOKEN", X_TOKEN)
    monkeypatch.setenv("TWEETFORGE_SYNC_BACKOFF_S", "0.01")
    get_settings.cache_clear()
    with FakeNetworks() as server:
        yield server
    get_settings.cache_clear()


def stored(engine, network: str | None = None) -> dict[str, str]:
    with engine.connect() as conn:
        query = select(posts.c.post_id, posts.c.text)
        if network:
            query = query.where(posts.c.network == network)
        return dict(conn.execute(query).all())


def sync(engine, net: FakeNetworks, spec: str, **kwargs):  # type: ignore[no-untyped-def]
    return sync_account(engine, parse_handle(spec), base_url=net.url, **kwargs)


@pytest.mark.parametrize(
    ("spec", "make", "page_size", "route"),
    [
        ("bsky:alice.bsky.social", "bluesky_account", 100, "bsky.feed"),
        ("mastodon:@bob@mastodon.test", "mastodon_account", 40, "mastodon.statuses"),
        ("x:@carol", "x_account", 100, "x.tweets"),
    ],
)
def test_first_sync_pages_through_the_account_and_the_second_fetches_only_new_posts(engine, net, spec, make, page_size, route):
    handle = parse_handle(spec).account.split("@")[0]
    account = getattr(net, make)(handle, page_size * 2 + 7)
    first = sync(engine, net, spec)
    assert first.pages == 3 and net.count(route) == 3
    assert first.new == page_size * 2 + 7 == len(stored(engine))

    for i in range(5):
        account.add(f"fresh post {i} with enough words")
    second = sync_account(engine, parse_handle(spec))  # the base URL was kept with the source
    assert (second.new, second.unchanged) == (5, 0)
    assert net.count(route) == 4  # one page for the five new posts
    assert len(stored(engine)) == page_size * 2 + 12

    third = sync_account(engine, parse_handle(spec))
    assert third.new == 0 and third.import_id is None
    [row] = followed(engine)
    assert row["syncs"] == 3 and row["stored"] == page_size * 2 + 12 and row["last_error"] is None


def test_reposts_replies_and_languages_keep_their_meaning_on_every_network(engine, net):
    alice = net.bluesky_account("alice.bsky.social", 3)
    alice.add("a repost of carol's post", repost_of="carol.bsky.social")
    alice.add("@bob.bsky.social I agree with you", reply_to="bob.bsky.social", lang="de")
    bob = net.mastodon_account("bob", 2)
    bob.add("reblogged words", repost_of="dave@example.social")
    bob.add("@ann thanks", reply_to="ann@example.social")
    carol = net.x_account("carol", 2)
    carol.add("someone else's tweet", repost_of="dave")
    carol.add("@erin yes", reply_to="erin")
    carol.add("x" * 280, long_text="A long post. " * 60)
    for spec in ("bsky:alice.bsky.social", "mastodon:@bob@mastodon.test", "x:carol"):
        sync(engine, net, spec)
    with engine.connect() as conn:
        rows = {r.text: r for r in conn.execute(select(posts))}
    assert rows["a repost of carol's post"].is_retweet and rows["a repost of carol's post"].author == "alice.bsky.social"
    assert rows["@bob.bsky.social I agree with you"].reply_to == "bob.bsky.social"
    assert rows["@bob.bsky.social I agree with you"].language == "de"
    assert rows["reblogged words"].is_retweet and rows["reblogged words"].author == "bob@mastodon.test"
    assert rows["@ann thanks"].reply_to == "ann@example.social"
    assert rows["RT @dave: someone else's tweet"].is_retweet
    assert rows["@erin yes"].reply_to == "erin"
    assert "A long post. " * 60 in rows  # note_tweet.text, not the 280-character cut
    assert not rows["Bluesky post number 0 from alice.bsky.social, with a few words to learn from"].is_retweet


def test_mastodon_html_becomes_the_text_a_person_reads(engine, net):
    bob = net.mastodon_account("bob")
    bob.add("", html=(
        '<p>Hello <span class="h-card" translate="no"><a href="https://mastodon.social/@ann" class="u-url mention">'
        '@<span>ann</span></a></span> &amp; friends &lt;3</p><p>line one<br>line two<br />'
        '<a href="https://example.com/a/very/long/path" target="_blank" rel="nofollow noopener"><span class="invisible">'
        'https://</span><span class="ellipsis">example.com/a/very/lon</span><span class="invisible">g/path</span></a> '
        '<a href="https://mastodon.test/tags/python" class="mention hashtag" rel="tag">#<span>python</span></a></p>'
    ))
    bob.add("the spoiler's post", spoiler="Film spoilers")
    bob.add("only for followers", visibility="private")
    bob.add("quiet but public", visibility="unlisted")
    sync(engine, net, "mastodon:@bob@mastodon.test")
    texts = set(stored(engine).values())
    assert "Hello @ann & friends <3\n\nline one\nline two\nhttps://example.com/a/very/long/path #python" in texts
    assert "Film spoilers\n\nthe spoiler's post" in texts
    assert "quiet but public" in texts and "only for followers" not in texts


def test_an_edit_replaces_the_text_and_keeps_the_old_one_in_history(engine, net):
    bob = net.mastodon_account("bob", 3)
    carol = net.x_account("carol", 3)
    sync(engine, net, "mastodon:@bob@mastodon.test")
    sync(engine, net, "x:carol")
    bob.posts[1].text, bob.posts[1].edited = "the toot, edited", True
    # an X edit is a new post id whose edit history starts with the original id
    original = carol.posts[0]
    carol.add("the tweet, edited", edit_ids=[original.id])
    carol.posts.remove(original)

    assert sync_account(engine, parse_handle("x:carol")).updated == 1
    assert sync_account(engine, parse_handle("mastodon:@bob@mastodon.test"), recheck_days=10_000).updated == 1
    with engine.connect() as conn:
        history = {r.text for r in conn.execute(select(post_history))}
        assert conn.execute(select(posts.c.text).where(posts.c.post_id == str(original.id))).scalar() == "the tweet, edited"
    assert history == {"Toot number 1 from bob, with a few words to learn from", "Tweet number 2 from carol, with a few words to learn from"}


def test_recheck_marks_posts_gone_from_the_network_deleted_and_new_snapshots_leave_them_out(engine, net, tmp_path):
    alice = net.bluesky_account("alice.bsky.social")
    now = datetime.now(UTC)
    for i in range(30):
        alice.add(f"post {i}: " + "a sentence long enough for a training set to keep. " * 5, at=now - timedelta(days=30 - i))
    sync(engine, net, "bsky:alice.bsky.social")
    gone_recent = alice.posts[2]   # 3 days old: inside a 7-day recheck
    gone_old = alice.posts[20]     # 21 days old: outside it
    alice.posts.remove(gone_recent)
    alice.posts.remove(gone_old)

    plain = sync_account(engine, parse_handle("bsky:alice.bsky.social"))
    assert plain.deleted == 0
    rechecked = sync_account(engine, parse_handle("bsky:alice.bsky.social"), recheck_days=7)
    assert rechecked.deleted == 1
    assert net.count("bsky.feed") == 4  # the recheck: one page for what is new, one re-reading the last 7 days
    with engine.connect() as conn:
        deleted = {r.text for r in conn.execute(select(posts.c.text).where(posts.c.deleted_at.is_not(None)))}
    assert deleted == {gone_recent.text}

    snapshot = create_snapshot(engine, tmp_path / "datasets", SnapshotRequest(name="alice", authors=("alice.bsky.social",)))
    assert snapshot.posts == 29


def test_a_rate_limit_is_waited_out_and_the_sync_finishes(engine, net):
    net.bluesky_account("alice.bsky.social", 250)
    net.faults.append(Fault("bsky.feed", "429", after=1, retry_after=1))
    waits = []
    result = sync(engine, net, "bsky:alice.bsky.social", progress=lambda p: p.waiting_s and waits.append((p.waiting_s, p.why)))
    assert result.new == 250 and result.waited_s >= 1
    assert waits and waits[0][0] == pytest.approx(1.0) and "429" in waits[0][1]


def test_a_spent_rate_limit_window_is_waited_out_before_the_next_request(engine, net):
    net.x_account("carol", 250)
    net.faults.append(Fault("x.tweets", "exhausted", retry_after=2))
    waits = []
    started = time.monotonic()
    result = sync(engine, net, "x:carol", progress=lambda p: p.waiting_s and waits.append(p.why))
    assert result.new == 250 and waits == ["rate limit"] and time.monotonic() - started >= 1
    assert net.count("x.tweets") == 3  # waited, never refused: no 429, no repeated request


def test_rate_limit_headers_of_every_network_are_read():
    now = 1_800_000_000.0
    assert rate_limit_wait({"Retry-After": "7"}, now) == 7
    assert rate_limit_wait({"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(int(now) + 30)}, now) == 30
    assert rate_limit_wait({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "2027-01-15T08:00:30+00:00"},
                           datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp()) == 30
    assert rate_limit_wait({"RateLimit-Remaining": "0", "RateLimit-Reset": str(int(now) + 5)}, now) == 5
    assert rate_limit_wait({"RateLimit-Remaining": "12", "RateLimit-Reset": str(int(now) + 5)}, now) is None


@pytest.mark.parametrize(("spec", "make", "route"), [
    ("bsky:alice.bsky.social", "bluesky_account", "bsky.feed"),
    ("mastodon:@bob@mastodon.test", "mastodon_account", "mastodon.statuses"),
    ("x:carol", "x_account", "x.tweets"),
])
def test_two_server_errors_and_a_truncated_body_are_retried(engine, net, spec, make, route):
    getattr(net, make)(parse_handle(spec).account.split("@")[0], 110)
    net.faults += [Fault(route, "500", times=2), Fault(route, "truncate", after=3)]
    result = sync(engine, net, spec)
    assert result.new == 110 and result.pages >= 2
    assert net.count(route) == 2 + 1 + result.pages  # two 500s, a truncated second page, and every page once


def test_a_server_that_keeps_failing_stops_with_one_line_naming_the_account_and_what_was_committed(engine, net, monkeypatch):
    net.x_account("carol", 250)
    net.faults.append(Fault("x.tweets", "503", after=1, times=100))
    with pytest.raises(LiveError) as error:
        sync(engine, net, "x:carol")
    message = str(error.value)
    assert "\n" not in message and message.startswith("x:carol: X answered 503 (after 5 tries); ")
    assert "100 new posts of 1 pages were committed" in message
    assert len(stored(engine)) == 100
    [row] = followed(engine)
    assert "503" in row["last_error"] and row["part_way"]

    net.faults.clear()
    assert sync_account(engine, parse_handle("x:carol")).new == 150  # continues where it stopped
    assert len(stored(engine)) == 250 and followed(engine)[0]["last_error"] is None


@pytest.mark.parametrize(("spec", "expected"), [
    ("bsky:nobody.bsky.social", "bsky:nobody.bsky.social: no such account on"),
    ("mastodon:@nobody@mastodon.test", "mastodon:nobody@mastodon.test: no such account on mastodon.test"),
    ("x:nobody", "x:nobody: no such account on X (Could not find user with username: [nobody].)"),
    ("bsky:gone.bsky.social", "bsky:gone.bsky.social: the account is suspended"),
    ("mastodon:@gone@mastodon.test", "mastodon:gone@mastodon.test: the account is suspended"),
    ("x:gone", "x:gone: the account is suspended"),
])
def test_unknown_and_suspended_accounts_are_one_line_errors_and_store_nothing(engine, net, spec, expected):
    net.bluesky_account("gone.bsky.social", 3).suspended = True
    net.mastodon_account("gone", 3).suspended = True
    net.x_account("gone", 3).suspended = True
    before = table_dump(engine, "posts", "imports", "sources")
    with pytest.raises(LiveError) as error:
        sync(engine, net, spec)
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)
    assert table_dump(engine, "posts", "imports", "sources") == before


def test_a_truncated_body_on_every_try_is_a_one_line_error_and_stores_nothing(engine, net):
    net.mastodon_account("bob", 10)
    net.faults.append(Fault("mastodon.statuses", "truncate", times=100))
    with pytest.raises(LiveError, match=r"malformed response body from mastodon.test .*after 5 tries"):
        sync(engine, net, "mastodon:@bob@mastodon.test")
    assert stored(engine) == {}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(imports)).scalar() == 0


def test_an_instance_that_requires_a_token_and_an_unreachable_one_say_so(engine, net):
    import fake_networks
    from fake_networks import mastodon_lookup

    def locked_down(net_, handler, rest, query):  # type: ignore[no-untyped-def]
        return 401, {"error": "This method requires an authenticated user"}, {}

    routes = fake_networks.ROUTES
    fake_networks.ROUTES = [(r, p, locked_down if a is mastodon_lookup else a) for r, p, a in routes]
    try:
        net.mastodon_account("bob", 3)
        with pytest.raises(LiveError, match="serves posts only with a token: set TWEETFORGE_MASTODON_TOKEN"):
            sync(engine, net, "mastodon:@bob@mastodon.test")
    finally:
        fake_networks.ROUTES = routes
    with pytest.raises(LiveError, match=r"mastodon:bob@unreachable.test: unreachable.test not reachable .*after 5 tries"):
        sync_account(engine, parse_handle("mastodon:@bob@unreachable.test"), base_url="http://127.0.0.1:9")


def test_two_syncs_of_one_account_at_once_never_both_write(engine, net):
    net.bluesky_account("alice.bsky.social", 250)
    net.delay_s = 0.3
    first = threading.Thread(target=sync, args=(engine, net, "bsky:alice.bsky.social"))
    first.start()
    deadline = time.monotonic() + 10
    while not followed(engine) or not followed(engine)[0]["locked_by"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(SyncLocked, match=r"already being synced by .* pid \d+ since"):
        sync(engine, net, "bsky:alice.bsky.social")
    first.join()
    assert len(stored(engine)) == 250 and followed(engine)[0]["locked_by"] is None


def test_a_sync_killed_mid_way_resumes_with_exactly_the_posts_the_server_has(tmp_path, net):
    home = tmp_path / "home"
    alice = net.bluesky_account("alice.bsky.social", 1000)
    net.delay_s = 0.25
    env = {**os.environ, "TWEETFORGE_HOME": str(home)}
    env.pop("TWEETFORGE_DATABASE_URL", None)
    child = subprocess.Popen([sys.executable, "-m", "tweetforge", "ingest", "bsky:alice.bsky.social", "--base-url", net.url],
                             env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while net.count("bsky.feed") < 4:
        assert child.poll() is None and time.monotonic() < deadline, child.stderr.read() if child.poll() is not None else "slow"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    from tweetforge.db.engine import engine_for

    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    kept = stored(engine)
    assert 200 <= len(kept) <= 400 and len(kept) % 100 == 0  # whole pages only
    [row] = followed(engine)
    assert row["part_way"] and row["locked_by"]  # the dead process still "holds" the lock
    for i in range(3):
        alice.add(f"posted while the sync was down {i}")
    net.delay_s = 0
    result = sync_account(engine, parse_handle("bsky:alice.bsky.social"))
    assert result.new == 1003 - len(kept)
    server_ids = {f"at://{alice.id}/app.bsky.feed.post/3l{p.id:011d}" for p in alice.posts}
    assert set(stored(engine)) == server_ids
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(posts)).scalar() == 1003
        assert conn.execute(select(sources.c.walk_resume)).scalar() is None


def test_a_post_from_a_live_sync_and_from_an_x_archive_is_one_post(engine, net, tmp_path):
    carol = net.x_account("carol", 5)
    sync(engine, net, "x:carol")
    tweet = carol.posts[0]
    archive = make_archive(tmp_path / "archive.zip", "carol", [[archive_tweet(str(tweet.id), tweet.text), archive_tweet("1", "only in the archive")]])
    result = ingest(engine, open_source(str(archive)))
    assert (result.new, result.unchanged) == (1, 1)
    assert len(stored(engine, "twitter")) == 6


def test_opted_out_accounts_are_not_fetched(engine, net):
    net.bluesky_account("alice.bsky.social", 5)
    from tweetforge.data.optout import add_optout

    add_optout(engine, "alice.bsky.social")
    with pytest.raises(LiveError, match="has opted out"):
        sync(engine, net, "bsky:alice.bsky.social")
    assert net.count("bsky.feed") == 0 and stored(engine) == {}


def test_the_x_token_never_reaches_logs_errors_or_the_store(engine, net, monkeypatch, caplog, tmp_path):
    net.x_account("carol", 120)
    caplog.set_level(logging.DEBUG)
    sync(engine, net, "x:carol")
    assert any(h.get("Authorization") == f"Bearer {X_TOKEN}" for h in net.seen_headers)  # it was sent
    assert "tweepy" in caplog.text and X_TOKEN not in caplog.text
    database = (tmp_path / "store.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("store.db-*"))
    assert X_TOKEN.encode() not in database

    monkeypatch.setenv("TWEETFORGE_X_BEARER_TOKEN", "wrong-" + X_TOKEN)
    get_settings.cache_clear()
    with pytest.raises(LiveError) as error:
        sync(engine, net, "x:carol")
    assert "TWEETFORGE_X_BEARER_TOKEN (401)" in str(error.value) and X_TOKEN not in str(error.value)
    assert X_TOKEN not in caplog.text

    monkeypatch.delenv("TWEETFORGE_X_BEARER_TOKEN")
    get_settings.cache_clear()
    with pytest.raises(LiveError, match="the X API needs a bearer token .*: set TWEETFORGE_X_BEARER_TOKEN"):
        sync(engine, net, "x:carol")


def test_x_says_when_the_3200_post_limit_is_reached(engine, net):
    net.x_account("carol", 3300)
    result = sync(engine, net, "x:carol")
    assert result.new == 3200
    assert any("only the 3,200 most recent posts" in note for note in result.notes)


def test_handles_are_checked_before_any_request():
    assert parse_handle("mastodon:@Bob@Mastodon.Social").account == "Bob@mastodon.social"
    assert parse_handle("bsky:did:plc:abc").account == "did:plc:abc"
    for bad, says in [("mastodon:@bob", "@user@instance"), ("bsky:alice", "handle such as"), ("x:@not-valid!", "X username")]:
        with pytest.raises(LiveError, match=says):
            parse_handle(bad)


def test_ingest_sources_and_sync_commands(tmp_path, net):
    home = tmp_path / "home"
    net.bluesky_account("alice.bsky.social", 150)
    bob = net.mastodon_account("bob", 50)
    first = run_cli(home, "ingest", "bsky:alice.bsky.social", "--base-url", net.url)
    assert "Synced bsky:alice.bsky.social (import #1): 150 posts in 2 pages (3 requests), 150 new" in first.stdout
    run_cli(home, "ingest", "mastodon:@bob@mastodon.test", "--base-url", net.url)
    bob.add("a brand new toot")
    synced = run_cli(home, "sync")
    assert "Synced mastodon:bob@mastodon.test (import #3): 1 post in 1 page (2 requests), 1 new" in synced.stdout
    assert "Synced bsky:alice.bsky.social: 0 posts in 1 page" in synced.stdout
    listed = run_cli(home, "sources").stdout
    assert "bsky:alice.bsky.social" in listed and "mastodon:bob@mastodon.test" in listed and "ok" in listed
    rechecked = run_cli(home, "sync", "--recheck-days", "10000", "--json")
    assert '"deleted": 0' in rechecked.stdout
    assert "bsky:alice.bsky.social" in run_cli(home, "ingest", "list").stdout

    net.faults.append(Fault("bsky.feed", "500", times=100))
    failed = run_cli(home, "sync", check=False)
    assert failed.returncode == 1 and "Error: bsky:alice.bsky.social: " in failed.stderr
    assert "Synced mastodon:bob@mastodon.test" in failed.stdout  # the other account still synced
    assert "500" in run_cli(home, "sources").stdout


def test_posts_no_store_can_take_are_left_out_and_named(engine, net):
    from datetime import datetime

    bob = net.mastodon_account("bob", 3)
    bob.add("a post with a language tag of a thousand characters", lang="x" * 1000)
    bob.add("a post from the year 2250", at=datetime(2250, 1, 1))
    result = sync(engine, net, "mastodon:@bob@mastodon.test")
    assert result.unusable == 2 and result.new == 3
    assert any("time 2250-01-01 00:00:00 is not a plausible post time" in note for note in result.notes)
    assert any("language is 1,000 characters" in note for note in result.notes), result.notes
    assert "a post from the year 2250" not in stored(engine, "mastodon").values()
