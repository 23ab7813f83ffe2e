"""`tweetforge watch`: a cycle syncs new posts, retrains a challenger from the champion, gates it and rolls
it out (or refuses it, or starts an A/B test), every step in pipeline_runs; one cycle at a time."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from conftest import run_cli
from fake_networks import FakeNetworks, Fault
from tweetforge.data.snapshots import get_snapshot, read_snapshot
from tweetforge.db.engine import engine_for
from tweetforge.db.schema import experiments, locks, pipeline_runs
from tweetforge.registry.versions import resolve

WORDS = ("the people want great jobs and lower taxes for every family in our country today we will win "
         "again because the economy is strong and the future is bright for workers farmers and builders").split()
QUICK = ("--train-minutes", "1", "--samples", "12", "--report-to", "none")


def post(account, rng: random.Random, i: int) -> None:  # type: ignore[no-untyped-def]
    account.add(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))) + f" #{i}")


@pytest.fixture
def world(tmp_path, monkeypatch, tiny_gpt2):
    """A followed Bluesky account with a champion model trained on its first 400 posts."""
    monkeypatch.setenv("TWEETFORGE_SYNC_BACKOFF_S", "0.01")
    home = tmp_path / "home"
    with FakeNetworks() as net:
        alice = net.bluesky_account("alice.bsky.social")
        rng = random.Random(7)
        for i in range(400):
            post(alice, rng, i)
        run_cli(home, "bot", "bsky:alice.bsky.social", "--base-url", net.url, "--base", str(tiny_gpt2), "--minutes", "1",
                "--samples", "12", "--report-to", "none", "--json")

        def more(n: int) -> None:
            for i in range(n):
                post(alice, rng, 10_000 + len(alice.posts) + i)

        yield home, net, more, engine_for(f"sqlite:///{home / 'tweetforge.db'}")


def cycle_steps(engine) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        last = conn.execute(select(pipeline_runs.c.id).where(pipeline_runs.c.step == "cycle").order_by(pipeline_runs.c.id.desc())).first()
        return [(r.step, r.outcome) for r in conn.execute(select(pipeline_runs).where(pipeline_runs.c.cycle_id == last.id))]


def test_new_posts_train_a_challenger_that_passes_the_gate_and_becomes_champion(world):
    home, net, more, engine = world
    assert resolve(engine, "alice:champion").version == 1
    quiet = run_cli(home, "watch", "--once", "--retrain-after", "50", *QUICK)
    assert "snapshot alice: skipped new_kept_posts 0" in quiet.stdout  # nothing new: no training
    more(120)
    out = run_cli(home, "watch", "--once", "--retrain-after", "50", "--margin", "10", *QUICK)
    assert cycle_steps(engine) == [("sync", "ok"), ("snapshot", "ok"), ("train", "ok"), ("gate", "promoted")]
    assert "gate alice: promoted" in out.stdout
    champion = resolve(engine, "alice:champion")
    assert champion.version == 2 and champion.dataset == "alice-v2" and champion.params.get("from_model") in ("alice:1", None)

    # the split is the post-id hash: every test post of the first snapshot is a test post of the second
    first, second = (read_snapshot(get_snapshot(engine, n), "test") for n in ("alice-v1", "alice-v2"))
    assert set(first["post_id"]) < set(second["post_id"])

    history = json.loads(run_cli(home, "pipeline", "runs", "--json").stdout)
    assert [c["outcome"] for c in history] == ["ok", "ok"] and history[0]["steps"][-1]["numbers"]["challenger"] == "alice:2"
    shown = run_cli(home, "pipeline", "runs", "--plot", str(home / "pipeline.png")).stdout
    assert "cycle #" in shown and "gate alice: promoted" in shown and (home / "pipeline.png").stat().st_size > 20_000

    from tweetforge.ui.dashboard import pipeline_view

    view = pipeline_view(engine, home / "plots")
    assert view.plot is not None and view.plot.stat().st_size > 20_000
    assert [r["outcome"] for r in view.rows if r["step"] == "gate"] == ["promoted"]


def test_a_worse_challenger_is_refused_with_the_reason_and_the_champion_stays(world):
    home, net, more, engine = world
    more(120)
    out = run_cli(home, "watch", "--once", "--retrain-after", "50", "--margin", "-0.9", *QUICK)
    assert cycle_steps(engine)[-1] == ("gate", "refused")
    assert "gate alice: refused" in out.stdout and "worse, margin -90%" in out.stdout
    assert resolve(engine, "alice:champion").version == 1 and resolve(engine, "alice:2").dataset == "alice-v2"


def test_with_ab_a_gated_challenger_starts_an_experiment_that_auto_promotes(world):
    home, net, more, engine = world
    more(120)
    run_cli(home, "watch", "--once", "--retrain-after", "50", "--ab", "--min-sample", "30", "--margin", "10", *QUICK)
    assert cycle_steps(engine)[-1] == ("gate", "experiment")
    with engine.connect() as conn:
        experiment = conn.execute(select(experiments)).one()
    assert experiment.name == "alice-2-vs-1" and experiment.auto_promote and experiment.status == "running"
    assert resolve(engine, "alice:champion").version == 1  # the experiment decides

    more(120)  # while it runs, no new challenger is trained beside the one under test
    out = run_cli(home, "watch", "--once", "--retrain-after", "50", "--ab", *QUICK)
    assert cycle_steps(engine) == [("sync", "ok"), ("experiment", "running")] and "experiment alice: running" in out.stdout

    from tweetforge.experiments.ab import get_experiment, log_generation, record_feedback

    for i in range(150):  # readers like the challenger's posts five times as often
        for variant, version, likes_in_10 in (("champion", 1, 1), ("challenger", 2, 5)):
            generation = log_generation(engine, "alice", version, "", {}, [], experiment="alice-2-vs-1", variant=variant)
            if i % 10 < likes_in_10:
                record_feedback(engine, generation, "like")
    out = run_cli(home, "watch", "--once", "--retrain-after", "50", "--ab", *QUICK)
    assert cycle_steps(engine) == [("sync", "ok"), ("experiment", "promoted")] and "champion alice:2" in out.stdout
    assert resolve(engine, "alice:champion").version == 2
    assert get_experiment(engine, "alice-2-vs-1").status == "decided" and get_experiment(engine, "alice-2-vs-1").winner == "challenger"


def test_a_network_failure_is_logged_and_the_next_cycle_retries(world):
    home, net, more, engine = world
    more(120)
    net.faults.append(Fault("bsky.feed", "500", times=100))
    failed = run_cli(home, "watch", "--once", "--retrain-after", "500", *QUICK, check=False)
    assert failed.returncode == 1 and cycle_steps(engine)[0] == ("sync", "failed")
    assert "sync: failed" in failed.stdout and "bsky:alice.bsky.social: " in failed.stdout
    net.faults.clear()
    run_cli(home, "watch", "--once", "--retrain-after", "500", *QUICK)
    assert cycle_steps(engine)[0] == ("sync", "ok")


def test_two_cycles_never_overlap(world):
    home, net, more, engine = world
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket
        from datetime import datetime

        with engine.begin() as conn:
            conn.execute(insert(locks).values(name="pipeline-cycle", holder=f"{socket.gethostname()} pid {sleeper.pid}",
                                              acquired_at=datetime.utcnow(), heartbeat_at=datetime.utcnow()))
        out = run_cli(home, "watch", "--once", *QUICK, check=False)
        assert out.returncode == 1 and f"a pipeline cycle is already running in {socket.gethostname()} pid {sleeper.pid}" in out.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    run_cli(home, "watch", "--once", *QUICK)  # the holder is gone: its lock is taken over


def test_watch_refuses_a_bad_interval_and_inbox(world):
    home, net, more, engine = world
    assert "--every 'soon'" in run_cli(home, "watch", "--every", "soon", check=False).stderr
    assert "not a folder" in run_cli(home, "watch", "--once", "--inbox", str(home / "nope"), check=False).stderr


def test_a_cycle_killed_during_training_is_picked_up_by_the_next(world):
    import os
    import signal
    import time

    home, net, more, engine = world
    more(300)
    env = {**os.environ, "TWEETFORGE_HOME": str(home)}
    env.pop("TWEETFORGE_DATABASE_URL", None)
    child = subprocess.Popen([sys.executable, "-m", "tweetforge", "watch", "--once", "--retrain-after", "50", "--margin", "10", *QUICK],
                             env=env, cwd=home.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:
        assert child.poll() is None and time.monotonic() < deadline, child.stderr.read() if child.poll() is not None else "slow"
        with engine.connect() as conn:
            training = conn.execute(select(pipeline_runs).where(pipeline_runs.c.step == "train", pipeline_runs.c.outcome == "running")).first()
        if training is not None:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert resolve(engine, "alice:champion").version == 1

    run_cli(home, "watch", "--once", "--retrain-after", "50", "--margin", "10", *QUICK)
    with engine.connect() as conn:
        rows = conn.execute(select(pipeline_runs).order_by(pipeline_runs.c.id)).all()
    killed = [r.step for r in rows if r.outcome == "killed"]
    assert killed == ["cycle", "train"]  # the dead cycle's unfinished rows, marked by the next cycle
    snapshot_steps = [r.numbers for r in rows if r.step == "snapshot"]
    assert snapshot_steps[-1] == {"dataset": "alice-v2", "reused": True, "posts": snapshot_steps[-2]["posts"]}
    assert cycle_steps(engine)[-1] == ("gate", "promoted") and resolve(engine, "alice:champion").dataset == "alice-v2"


def test_a_cycle_is_tracked_with_its_steps_numbers(tmp_path, monkeypatch):
    import sqlite3
    from datetime import datetime, timedelta

    from tweetforge.pipeline.watch import track_cycle

    started = datetime(2026, 12, 3, 10, 0)
    track_cycle(tmp_path, "trackio", 7, [
        {"step": "sync", "model_name": None, "started_at": started, "finished_at": started + timedelta(seconds=4), "outcome": "ok",
         "numbers": {"new": 31, "accounts": 2}},
        {"step": "gate", "model_name": "alice", "started_at": started, "finished_at": started + timedelta(seconds=9),
         "outcome": "promoted", "numbers": {"challenger_bits_per_char": 2.5, "challenger": "alice:2"}},
    ])
    from trackio.utils import TRACKIO_DIR  # fixed when trackio is first imported in this process

    with sqlite3.connect(Path(TRACKIO_DIR) / "tweetforge.db") as db:
        rows = db.execute("SELECT * FROM metrics").fetchall()
    [row] = [r for r in rows if "pipeline-cycle-7" in r]
    logged = json.loads(next(v for v in row if isinstance(v, bytes)))
    assert logged["sync/new"] == 31 and logged["sync/seconds"] == 4 and logged["gate/alice/challenger_bits_per_char"] == 2.5


def test_a_published_generated_post_never_reaches_the_next_training_set(world):
    from tweetforge.db.schema import generated_refusals, generations

    home, net, more, engine = world
    with engine.connect() as conn:
        [logged] = conn.execute(select(generations.c.posts).where(generations.c.user_id == "bot")).scalars()
    published = next(p["text"] for p in logged if len(p["text"].split()) >= 3)
    net.bluesky["alice.bsky.social"].add(published)  # someone posted what the bot wrote
    more(120)
    run_cli(home, "watch", "--once", "--retrain-after", "50", "--margin", "10", *QUICK)
    assert cycle_steps(engine)[1][0] == "snapshot"
    trained_on = read_snapshot(get_snapshot(engine, "alice-v2"))
    from tweetforge.data.generated import normalized

    assert normalized(published) not in {normalized(t) for t in trained_on["text"]} and trained_on.height > 0
    with engine.connect() as conn:
        assert conn.execute(select(generated_refusals.c.author)).scalars().all() == ["alice.bsky.social"]


def test_files_dropped_into_the_inbox_are_imported_once(world, tmp_path):
    home, net, more, engine = world
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "more.jsonl").write_text(json.dumps({"id_str": "77", "full_text": "A post from a file in the inbox folder today",
                                                  "user": {"screen_name": "alice.bsky.social"}}) + "\n")
    first = run_cli(home, "watch", "--once", "--inbox", str(inbox), "--retrain-after", "500", *QUICK)
    assert "inbox: ok files 1, new 1, skipped_known 0" in first.stdout
    second = run_cli(home, "watch", "--once", "--inbox", str(inbox), "--retrain-after", "500", *QUICK)
    assert "inbox: ok files 0, new 0, skipped_known 1" in second.stdout
