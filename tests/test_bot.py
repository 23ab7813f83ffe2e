"""`tweetforge bot`: a handle all the way to a registered, evaluated model and five generated posts."""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import func, select

from conftest import run_cli
from fake_networks import FakeNetworks
from tweetforge.db.engine import engine_for
from tweetforge.db.schema import generations

WORDS = ("the people want great jobs and lower taxes for every family in our country today we will win "
         "again because the economy is strong and the future is bright for workers farmers and builders").split()


@pytest.fixture
def net(monkeypatch):
    monkeypatch.setenv("TWEETFORGE_SYNC_BACKOFF_S", "0.01")
    with FakeNetworks() as server:
        yield server


def chatty(net: FakeNetworks, handle: str, n: int) -> None:
    account = net.bluesky_account(handle)
    rng = random.Random(handle)
    for i in range(n):
        account.add(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))) + f" #{i}")


def test_bot_takes_a_handle_to_an_evaluated_model_and_five_generated_posts(tmp_path, net, tiny_gpt2):
    home = tmp_path / "home"
    chatty(net, "alice.bsky.social", 400)
    out = run_cli(home, "bot", "bsky:alice.bsky.social", "--base-url", net.url, "--base", str(tiny_gpt2), "--minutes", "1",
                  "--samples", "12", "--report-to", "none", "--json")
    run = json.loads(out.stdout)
    assert run["name"] == "alice" and run["authors"] == ["alice.bsky.social"] and run["dataset"] == "alice-v1"
    assert run["model"] == "alice:1" and run["imports"][0]["new"] == 400
    assert [e["subject"] for e in run["evaluation"]] == ["alice:1", "markov", f"base:{tiny_gpt2}"]
    assert 1 <= len(run["posts"]) <= 5 and all(p["generated"] is True for p in run["posts"])
    card = (home / "models" / "alice" / "1" / "README.md").read_text()
    assert "alice.bsky.social" in card and "bits per char" in card.lower()
    assert set(run["seconds"]) == {"import", "stats", "snapshot", "train", "evaluate", "promote", "generate"}
    assert run["champion"] is True  # the name's first model
    with engine_for(f"sqlite:///{home / 'tweetforge.db'}").connect() as conn:
        assert conn.execute(select(func.count()).select_from(generations).where(generations.c.user_id == "bot")).scalar() == 1

    printed = run_cli(home, "bot", "bsky:alice.bsky.social", "--base", str(tiny_gpt2), "--minutes", "1", "--samples", "12",
                      "--report-to", "none").stdout
    assert "import bsky:alice.bsky.social: 0 posts read, 0 new" in printed  # incremental: already followed
    assert "What cleaning keeps" in printed and "registered alice:2" in printed and "five generated posts" in printed
    assert "Model card:" in printed and "alice/2/README.md" in printed


def test_bot_stops_before_training_when_there_is_too_little_text(tmp_path, net, tiny_gpt2):
    home = tmp_path / "home"
    chatty(net, "quiet.bsky.social", 20)
    out = run_cli(home, "bot", "bsky:quiet.bsky.social", "--base-url", net.url, "--base", str(tiny_gpt2), check=False)
    assert out.returncode == 1
    assert "Error: @quiet.bsky.social has" in out.stderr and "characters left after cleaning" in out.stderr
    assert not (home / "models").exists() or not any((home / "models").iterdir())
