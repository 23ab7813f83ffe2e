#!/usr/bin/env python
"""Benchmark: live syncs of one account per network from the local server of tests/fake_networks.py
(it answers as Bluesky's AppView, a Mastodon instance and the X API v2 do), a first sync of N posts
(default 10,000; X serves at most 3,200 of them, as the real API does) and an incremental one after
150 new posts.

  tweetforge  `sync_account` (what `tweetforge ingest bsky:…` and `tweetforge sync` run): the network's
              client library, per-page transactions into a fresh SQLite store, the cursor, the lock.
  baseline    "raw fetch": the same pages with a bare httpx loop that only parses the JSON (no client
              library models, no store): the floor any sync of this server pays.

Each side runs in its own subprocess, so its peak RSS (getrusage of that child) is its own. Printed:
posts per second, the ratio tweetforge / raw fetch (1.0 would mean the library and the store cost
nothing), requests made against the minimum (one account lookup plus ceil(posts / page size) pages).
The client library's import (atproto's takes over a second) is timed apart, as "import s", once per
process; `tweetforge sync` pays it once for all accounts of a network.

Usage: .venv/bin/python benchmarks/sync.py [--posts N]
Results: benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

NETWORKS = {  # network: (spec, page size)
    "bluesky": ("bsky:alice.bsky.social", 100),
    "mastodon": ("mastodon:@bob@mastodon.test", 40),
    "x": ("x:carol", 100),
}
X_LIMIT = 3200
NEW_POSTS = 150


def raw_fetch(network: str, url: str, token: str) -> dict:
    """Every page of the account with httpx and json only: the baseline."""
    import httpx

    started = time.perf_counter()
    posts = requests = 0
    with httpx.Client(base_url=url, timeout=30) as http:
        if network == "bluesky":
            did = http.get("/xrpc/app.bsky.actor.getProfile", params={"actor": "alice.bsky.social"}).json()["did"]
            requests, cursor = 1, None
            while True:
                params = {"actor": did, "limit": 100} | ({"cursor": cursor} if cursor else {})
                page = http.get("/xrpc/app.bsky.feed.getAuthorFeed", params=params).json()
                requests += 1
                posts += len(page["feed"])
                if not (cursor := page.get("cursor")):
                    break
        elif network == "mastodon":
            account = http.get("/api/v1/accounts/lookup", params={"acct": "bob"}).json()["id"]
            requests, link = 1, f"/api/v1/accounts/{account}/statuses?limit=40"
            while link:
                answer = http.get(link)
                requests += 1
                posts += len(answer.json())
                nxt = answer.links.get("next")
                link = nxt["url"] if nxt and len(answer.json()) == 40 else None
        else:
            headers = {"Authorization": f"Bearer {token}"}
            user = http.get("/2/users/by/username/carol", headers=headers).json()["data"]["id"]
            requests, token_ = 1, None
            while True:
                params = {"max_results": 100} | ({"pagination_token": token_} if token_ else {})
                page = http.get(f"/2/users/{user}/tweets", params=params, headers=headers).json()
                requests += 1
                posts += len(page.get("data", []))
                if not (token_ := page.get("meta", {}).get("next_token")):
                    break
    return {"seconds": time.perf_counter() - started, "posts": posts, "requests": requests}


def tweetforge_sync(network: str, url: str, home: str) -> dict:
    from tweetforge.config import get_settings
    from tweetforge.data.sources.live import parse_handle
    from tweetforge.data.sync import sync_account
    from tweetforge.db.engine import engine_for

    get_settings.cache_clear()
    engine = engine_for(f"sqlite:///{home}/tweetforge.db")
    started = time.perf_counter()
    __import__({"bluesky": "atproto", "mastodon": "mastodon", "x": "tweepy"}[network])  # once per process
    imported = time.perf_counter()
    result = sync_account(engine, parse_handle(NETWORKS[network][0]), base_url=url)
    return {"seconds": time.perf_counter() - imported, "import_s": imported - started, "posts": result.fetched,
            "new": result.new, "requests": result.requests}


def child(args: argparse.Namespace) -> None:
    if args.side == "raw":
        out = raw_fetch(args.network, args.url, os.environ.get("TWEETFORGE_X_BEARER_TOKEN", ""))
    else:
        out = tweetforge_sync(args.network, args.url, args.home)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(side: str, network: str, url: str, home: str, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--network", network, "--url", url, "--home", home]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} {network} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=10_000)
    parser.add_argument("--child", choices=["raw", "tweetforge"], dest="side")
    parser.add_argument("--network", choices=list(NETWORKS))
    parser.add_argument("--url")
    parser.add_argument("--home")
    args = parser.parse_args()
    if args.side:
        child(args)
        return

    from common import machine
    from fake_networks import X_TOKEN, FakeNetworks

    env = {**os.environ, "TWEETFORGE_X_BEARER_TOKEN": X_TOKEN, "PYTHONPATH": str(ROOT / "src")}
    print(f"# benchmarks/sync.py — {datetime.now():%Y-%m-%d %H:%M}, {machine()}, Python {sys.version.split()[0]}")
    print(f"# {args.posts:,} posts per account (X serves the newest {X_LIMIT:,}), then {NEW_POSTS} new ones\n")
    header = (f"{'network':<9} {'phase':<12} {'side':<10} {'posts':>6} {'s':>7} {'posts/s':>8} {'requests':>8} {'minimum':>7} "
              f"{'peak MiB':>8} {'import s':>8}")
    print(header)
    ratios = []
    with FakeNetworks() as net:
        accounts = {"bluesky": net.bluesky_account("alice.bsky.social", args.posts),
                    "mastodon": net.mastodon_account("bob", args.posts),
                    "x": net.x_account("carol", args.posts)}
        for network, (_, page_size) in NETWORKS.items():
            home = tempfile.mkdtemp(prefix=f"sync-{network}-")
            served = min(args.posts, X_LIMIT) if network == "x" else args.posts
            for phase in ("first", "incremental"):
                if phase == "incremental":
                    for i in range(NEW_POSTS):
                        accounts[network].add(f"a new post {i} for the incremental sync")
                expected = served if phase == "first" else NEW_POSTS
                minimum = 1 + math.ceil(expected / page_size)
                sides = {"raw fetch": run_child("raw", network, net.url, home, env)} if phase == "first" else {}
                sides["tweetforge"] = run_child("tweetforge", network, net.url, home, env)
                for side, out in sides.items():
                    print(f"{network:<9} {phase:<12} {side:<10} {out['posts']:>6,} {out['seconds']:>7.2f} "
                          f"{out['posts'] / out['seconds']:>8,.0f} {out['requests']:>8} {minimum:>7} {out['peak_rss_mib']:>8.0f} "
                          f"{out.get('import_s', 0):>8.2f}")
                if phase == "first":
                    ratio = sides["tweetforge"]["seconds"] / sides["raw fetch"]["seconds"]
                    ratios.append(ratio)
                    print(f"{'':<9} {'':<12} ratio tweetforge / raw fetch: {ratio:.2f}×")
                assert sides["tweetforge"]["new"] == expected, sides["tweetforge"]
    print(f"\nmedian ratio tweetforge / raw fetch (first syncs): {sorted(ratios)[len(ratios) // 2]:.2f}×")


if __name__ == "__main__":
    main()
