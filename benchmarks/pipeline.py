#!/usr/bin/env python
"""Benchmark: one full `watch` cycle on the bundled timeline (example:trump) split in time into "old"
posts (the first 3,000) and "new" ones (the next 600), with the real default base model.

  1. `bot` on the old posts (not timed as the cycle): the champion, trained within --minutes.
  2. A running Service holds the champion.
  3. The new posts are dropped into an inbox folder as an X API v1.1 JSONL file; `run_cycle` (what
     `tweetforge watch --once --inbox DIR` runs): inbox import, snapshot, a challenger trained from the
     champion within --minutes, the gate on the new test split.
  4. The Service swaps the new champion in (`Service.load`, what its registry watcher calls): "reload",
     with the process's model cache cleared, as in a serve process that did not run the evaluation.

Baseline: "fresh", a model trained from the untuned base (not continued from the champion) on the same
new snapshot with the same time budget, evaluated on the same test split. Printed: seconds per step, and
the test bits per char of champion, challenger and fresh, with the ratio challenger / fresh (below 1:
continuing from the champion beats starting over in the same time).

Usage: .venv/bin/python benchmarks/pipeline.py [--minutes M] [--samples N]
Results: benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

OLD, NEW = 3000, 600


def as_jsonl(posts, path: Path) -> Path:  # type: ignore[no-untyped-def]
    with path.open("w") as f:
        for p in posts:
            f.write(json.dumps({"id_str": p.post_id, "full_text": p.text, "user": {"screen_name": p.author},
                                "created_at": p.created_at.isoformat() if p.created_at else None}) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget of champion, challenger and fresh")
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()

    from common import machine

    work = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    os.environ["TWEETFORGE_HOME"] = str(work / "home")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tweetforge.config import get_settings
    from tweetforge.data.post import Post
    from tweetforge.data.sources import ReadOptions
    from tweetforge.data.sources.example import read_example_posts
    from tweetforge.db.engine import get_engine
    from tweetforge.evaluation.evaluate import EvalSettings, run_evaluations
    from tweetforge.pipeline.bot import run_bot
    from tweetforge.pipeline.watch import WatchSettings, run_cycle
    from tweetforge.registry.versions import register, resolve
    from tweetforge.serving.service import Service, ServiceSettings
    from tweetforge.training.train import TrainConfig, train

    print(f"# benchmarks/pipeline.py — {datetime.now():%Y-%m-%d %H:%M}, {machine()}, budget {args.minutes:g} min per training")
    timeline = sorted((p for p in read_example_posts("trump", ReadOptions()) if isinstance(p, Post) and p.created_at),
                      key=lambda p: p.created_at)
    old = as_jsonl(timeline[:OLD], work / "old.jsonl")
    inbox = work / "inbox"
    inbox.mkdir()
    engine, home = get_engine(), get_settings().resolved_home

    started = time.perf_counter()
    champion = run_bot(engine, home, [str(old)], name="trump", minutes=args.minutes, samples=args.samples, report_to="none").version
    print(f"champion {champion.ref} by bot in {time.perf_counter() - started:.0f} s")
    service = Service(engine, ServiceSettings(models=["trump"]))
    service.load()

    as_jsonl(timeline[OLD : OLD + NEW], inbox / "new.jsonl")
    settings = WatchSettings(retrain_after=200, train_minutes=args.minutes, inbox=inbox, samples=args.samples, report_to="none")
    started = time.perf_counter()
    cycle = run_cycle(engine, home, settings)
    cycle_s = time.perf_counter() - started
    from tweetforge.generation.generate import load_model

    load_model.cache_clear()  # the gate's evaluation loaded the challenger in this process; a serve process has not
    started = time.perf_counter()
    service.load()
    reload_s = time.perf_counter() - started
    served = [m.version.ref for m in service.loaded()]

    steps = [s for s in cycle.steps if s["step"] != "cycle"]
    print(f"\n{'step':<10} {'outcome':<10} {'seconds':>8}  numbers")
    for s in steps:
        seconds = (s["finished_at"] - s["started_at"]).total_seconds()
        print(f"{s['step']:<10} {s['outcome']:<10} {seconds:>8.1f}  {json.dumps(s['numbers'], default=str)}")
    print(f"{'reload':<10} {'ok':<10} {reload_s:>8.1f}  serving {served}")
    print(f"{'cycle':<10} {cycle.outcome:<10} {cycle_s:>8.1f}")

    gate = next(s for s in steps if s["step"] == "gate")
    dataset = next(s for s in steps if s["step"] == "snapshot")["numbers"]["dataset"]
    from tweetforge.data.snapshots import get_snapshot

    snapshot = get_snapshot(engine, dataset)
    fresh_result = train(TrainConfig(dataset=dataset, name="trump-fresh", max_minutes=args.minutes, report_to="none"), snapshot, home,
                         resolve_from=lambda ref: resolve(engine, ref).path)
    fresh = register(engine, home / "models", fresh_result, snapshot)
    bpc = {e.subject: e.metrics["bits_per_char"] for e in run_evaluations(
        engine, home, [gate["numbers"]["challenger"], champion.ref, fresh.ref], dataset, EvalSettings(samples=args.samples),
        report_to="none").evaluations}
    challenger_bpc, champion_bpc, fresh_bpc = bpc[gate["numbers"]["challenger"]], bpc[champion.ref], bpc[fresh.ref]
    print(f"\ntest bits per char on {dataset}: champion {champion_bpc:.4f}, challenger {challenger_bpc:.4f}, "
          f"fresh (baseline) {fresh_bpc:.4f}")
    print(f"ratio challenger / fresh: {challenger_bpc / fresh_bpc:.3f}; challenger / champion: {challenger_bpc / champion_bpc:.3f}")
    print(f"(data home {work})")


if __name__ == "__main__":
    main()
