"""`tweetforge watch`: the cycle that keeps models fresh. Each cycle

1. syncs every followed account (and imports new files from an inbox folder);
2. for each model with a champion whose authors have at least `retrain_after` new kept posts since the
   champion's dataset, freezes a new snapshot with the same rules and authors (the split is the post-id
   hash, so every old test post stays a test post);
3. trains a challenger continuing from the champion within a time budget;
4. evaluates challenger and champion on the new test split and runs the promotion gate: a challenger
   that passes becomes champion, or with `ab` starts an experiment champion vs challenger that
   auto-promotes the winner; one that fails stays registered with the reason. While that experiment
   runs, later cycles apply its decision once it is conclusive (a serving process does too, on
   feedback) and train no new challenger for that model.

Each cycle and each step is a row of pipeline_runs. One cycle at a time, across processes (a lock in
the store). A cycle killed at any step leaves the finished steps' results: the next cycle reuses a
snapshot no challenger was trained on yet and resumes an interrupted training run."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Engine, insert, select, update

from tweetforge.data.clean import CleaningRules, clean
from tweetforge.data.ingest import ingest
from tweetforge.data.snapshots import Snapshot, SnapshotRequest, create_snapshot, get_snapshot, list_snapshots, read_snapshot
from tweetforge.data.sources import open_source
from tweetforge.data.store import read_posts
from tweetforge.data.sync import followed, sync_followed
from tweetforge.db.engine import writing
from tweetforge.db.locks import acquire, heartbeat, release
from tweetforge.db.schema import imports, model_aliases, model_versions, pipeline_runs
from tweetforge.errors import TweetforgeError

LOCK = "pipeline-cycle"
LOCK_STALE_S = 6 * 3600
"""A cycle trains for minutes; a heartbeat older than this is a cycle that died on another machine."""


@dataclass
class WatchSettings:
    retrain_after: int = 200
    """New kept posts of a model's authors since its champion's dataset that make a retraining worth it."""
    train_minutes: float = 4.0
    inbox: Path | None = None
    ab: bool = False
    min_sample: int = 500
    margin: float | None = None
    base: str | None = None
    """Only for a model without a champion to continue from (never set by a cycle itself)."""
    samples: int = 100
    report_to: str = "trackio"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Log:
    """Rows of pipeline_runs: one for the cycle, one per step."""

    def __init__(self, engine: Engine, on_step: Callable[[dict], None] | None = None):
        self.engine = engine
        self.on_step = on_step
        self.cycle_id: int | None = None

    def start(self, step: str, model_name: str | None = None) -> int:
        with writing(self.engine) as conn:
            row_id = conn.execute(insert(pipeline_runs).values(
                cycle_id=self.cycle_id, step=step, model_name=model_name, started_at=_now(), outcome="running", numbers={},
            )).inserted_primary_key[0]
        if step == "cycle":
            self.cycle_id = row_id
        return row_id

    def finish(self, row_id: int, outcome: str, numbers: dict[str, Any] | None = None, error: str | None = None) -> None:
        with writing(self.engine) as conn:
            conn.execute(update(pipeline_runs).where(pipeline_runs.c.id == row_id).values(
                finished_at=_now(), outcome=outcome, numbers=numbers or {}, error=error))
            row = conn.execute(select(pipeline_runs).where(pipeline_runs.c.id == row_id)).one()
        if self.on_step:
            self.on_step(dict(row._mapping))


def _rules(snapshot: Snapshot) -> CleaningRules:
    stored = snapshot.filters.get("rules", {})
    known = {f.name for f in fields(CleaningRules)}
    values = {k: v for k, v in stored.items() if k in known}
    if "languages" in values:
        values["languages"] = tuple(values["languages"])
    return CleaningRules(**values)


def new_kept_posts(engine: Engine, snapshot: Snapshot) -> int:
    """Kept posts of the snapshot's authors, under its rules, that the snapshot does not hold."""
    with engine.connect() as conn:
        frame = read_posts(conn, snapshot.authors)
    kept = clean(frame, _rules(snapshot)).filter(pl.col("drop_reason").is_null()).select("network", "post_id")
    held = read_snapshot(snapshot).select("network", "post_id").unique()
    return kept.join(held, on=["network", "post_id"], how="anti").height


def champions(engine: Engine) -> list[tuple[str, int, str]]:
    """(name, version, dataset) of every model name's champion."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(model_versions.c.name, model_versions.c.version, model_versions.c.dataset)
            .join(model_aliases, (model_aliases.c.name == model_versions.c.name) & (model_aliases.c.version == model_versions.c.version))
            .where(model_aliases.c.alias == "champion")
            .order_by(model_versions.c.name)
        ).all()
    return [(r.name, r.version, r.dataset) for r in rows]


def pending_snapshot(engine: Engine, name: str, champion_dataset: str) -> Snapshot | None:
    """A snapshot a cycle made for this model that no version was trained on yet (the cycle stopped)."""
    with engine.connect() as conn:
        trained_on = set(conn.execute(select(model_versions.c.dataset).where(model_versions.c.name == name)).scalars())
    champion = get_snapshot(engine, champion_dataset)
    mine = [s for s in list_snapshots(engine)
            if s.filters.get("pipeline_of") == name and s.name not in trained_on and s.created_at > champion.created_at]
    return max(mine, key=lambda s: s.created_at) if mine else None


def next_snapshot_name(engine: Engine, name: str) -> str:
    taken = {s.name for s in list_snapshots(engine)}
    n = 2
    while f"{name}-v{n}" in taken:
        n += 1
    return f"{name}-v{n}"


def import_inbox(engine: Engine, inbox: Path) -> dict[str, int]:
    """Every file in the folder whose bytes were never imported (the import log keeps each file's hash)."""
    with engine.connect() as conn:
        seen = set(conn.execute(select(imports.c.file_hash)).scalars())
    numbers = {"files": 0, "new": 0, "skipped_known": 0}
    for path in sorted(p for p in inbox.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            numbers["skipped_known"] += 1
            continue
        result = ingest(engine, open_source(str(path)))
        numbers["files"] += 1
        numbers["new"] += result.new
    return numbers


def running_experiment(engine: Engine, log: Log, name: str) -> bool:
    """Running experiments of this model's versions: apply each one's decision if it is conclusive. True if
    there was one, so this cycle trains no challenger (beside the one being tested, or from a champion
    that just changed)."""
    from tweetforge.experiments.ab import apply_decision, experiment_status, list_experiments

    running = [e for e in list_experiments(engine) if e.status == "running" and all(v.model_name == name for v in e.variants)]
    for experiment in running:
        step = log.start("experiment", name)
        status = experiment_status(engine, experiment.name)
        numbers: dict[str, Any] = {"experiment": experiment.name, "state": status.state}
        numbers |= {f"{r.variant}_exposures": r.exposures for r in status.results}
        numbers |= {f"{r.variant}_rate": r.rate for r in status.results}
        if apply_decision(engine, status):
            log.finish(step, "promoted", numbers | {"champion": experiment.variant(status.winner).model_ref})  # type: ignore[arg-type]
        else:
            log.finish(step, "running", numbers | {"reason": status.reason})
    return bool(running)


def retrain(engine: Engine, home: Path, log: Log, name: str, version: int, dataset: str, settings: WatchSettings) -> None:
    from tweetforge.config import get_settings
    from tweetforge.evaluation.promotion import DEFAULT_MARGIN, promote
    from tweetforge.registry.versions import list_versions, register, resolve
    from tweetforge.training.train import TrainConfig, find_resumable_run, saved_config, train

    champion_snapshot = get_snapshot(engine, dataset)
    snapshot = pending_snapshot(engine, name, dataset)
    step = log.start("snapshot", name)
    if snapshot is None:
        new = new_kept_posts(engine, champion_snapshot)
        if new < settings.retrain_after:
            log.finish(step, "skipped", {"new_kept_posts": new, "retrain_after": settings.retrain_after})
            return
        request = SnapshotRequest(
            name=next_snapshot_name(engine, name), authors=tuple(champion_snapshot.authors), rules=_rules(champion_snapshot),
            fractions=tuple(champion_snapshot.filters.get("fractions") or SnapshotRequest.fractions),  # type: ignore[arg-type]
            balance=bool(champion_snapshot.filters.get("balance")), pipeline_of=name,
        )
        snapshot = create_snapshot(engine, get_settings().datasets_location, request)
        log.finish(step, "ok", {"dataset": snapshot.name, "new_kept_posts": new, "posts": snapshot.posts})
    else:
        log.finish(step, "ok", {"dataset": snapshot.name, "reused": True, "posts": snapshot.posts})
    heartbeat(engine, LOCK)

    step = log.start("train", name)
    champion_ref = f"{name}:{version}"
    try:
        run_dir = None
        try:
            run_dir = find_resumable_run(home, name, {v.run_id for v in list_versions(engine, name)})
            if saved_config(run_dir).dataset != snapshot.name:
                run_dir = None
        except TweetforgeError:
            run_dir = None
        config = saved_config(run_dir) if run_dir else TrainConfig(
            dataset=snapshot.name, name=name, from_model=champion_ref, max_minutes=settings.train_minutes, report_to=settings.report_to)
        result = train(config, snapshot, home, run_dir=run_dir, resume=run_dir is not None,
                       resolve_from=lambda ref: resolve(engine, ref).path)
        challenger = register(engine, get_settings().models_location, result, snapshot)
    except TweetforgeError as exc:
        log.finish(step, "failed", error=str(exc))
        raise
    log.finish(step, "ok", {"challenger": challenger.ref, "resumed": run_dir is not None, "steps": challenger.metrics.get("steps"),
                            "val_loss": challenger.metrics.get("val_loss")})
    heartbeat(engine, LOCK)

    from tweetforge.evaluation.evaluate import EvalSettings

    step = log.start("gate", name)
    margin = DEFAULT_MARGIN if settings.margin is None else settings.margin
    decision = promote(engine, home, challenger.ref, margin=margin, settings=EvalSettings(samples=settings.samples),
                       report_to=settings.report_to) if not settings.ab else None
    if decision is not None:
        numbers = {"challenger": challenger.ref, "champion": champion_ref,
                   "challenger_bits_per_char": decision.candidate_metrics.get("bits_per_char"),
                   "champion_bits_per_char": (decision.champion_metrics or {}).get("bits_per_char")}
        log.finish(step, "promoted" if decision.promoted else "refused", numbers,
                   error=None if decision.promoted else "; ".join(decision.reasons))
        return
    from tweetforge.evaluation.evaluate import run_evaluations
    from tweetforge.evaluation.promotion import DEFAULT_MAX_COPY_RATE, gate
    from tweetforge.experiments.ab import create_experiment

    evaluations = run_evaluations(engine, home, [challenger.ref, champion_ref], snapshot.name, EvalSettings(samples=settings.samples),
                                  report_to=settings.report_to).evaluations
    reasons = gate(evaluations[0].metrics, evaluations[1].metrics, margin, DEFAULT_MAX_COPY_RATE)
    numbers = {"challenger": challenger.ref, "champion": champion_ref,
               "challenger_bits_per_char": evaluations[0].metrics.get("bits_per_char"),
               "champion_bits_per_char": evaluations[1].metrics.get("bits_per_char")}
    if reasons:
        log.finish(step, "refused", numbers, error="; ".join(reasons))
        return
    experiment = f"{name}-{challenger.version}-vs-{version}"
    create_experiment(engine, experiment, [("champion", champion_ref, 0.5), ("challenger", challenger.ref, 0.5)],
                      min_sample=settings.min_sample, auto_promote=True)
    log.finish(step, "experiment", numbers | {"experiment": experiment})


@dataclass
class CycleResult:
    cycle_id: int
    outcome: str
    steps: list[dict]


def run_cycle(engine: Engine, home: Path, settings: WatchSettings, *, on_step: Callable[[dict], None] | None = None,
              should_stop: Callable[[], bool] = lambda: False) -> CycleResult:
    """One cycle; raises Locked when another cycle is running. A failing step is logged and ends its part
    of the cycle (the champion keeps serving); the next cycle retries. should_stop is asked between
    steps: a stop request (SIGTERM, Ctrl-C) ends the cycle at the next step boundary."""
    steps: list[dict] = []

    def keep(row: dict) -> None:
        steps.append(row)
        if on_step:
            on_step(row)

    acquire(engine, LOCK, stale_s=LOCK_STALE_S, what="a pipeline cycle")
    with writing(engine) as conn:  # we hold the lock: whatever is still "running" belongs to a cycle that was killed
        conn.execute(update(pipeline_runs).where(pipeline_runs.c.outcome == "running")
                     .values(outcome="killed", finished_at=_now(), error="the process ended before the step did"))
    log = Log(engine, keep)
    cycle = log.start("cycle")
    failures = 0
    try:
        step = log.start("sync")
        if followed(engine):
            outcomes = sync_followed(engine)
            failed = [str(o) for o in outcomes if isinstance(o, TweetforgeError)]
            new = sum(o.new for o in outcomes if not isinstance(o, TweetforgeError))
            failures += bool(failed)
            log.finish(step, "failed" if failed else "ok", {"accounts": len(outcomes), "new": new, "failed": len(failed)},
                       error="; ".join(failed) or None)
        else:
            log.finish(step, "skipped", {"accounts": 0})
        if settings.inbox is not None:
            step = log.start("inbox")
            try:
                log.finish(step, "ok", import_inbox(engine, settings.inbox))
            except TweetforgeError as exc:
                failures += 1
                log.finish(step, "failed", error=str(exc))
        heartbeat(engine, LOCK)
        for name, version, dataset in champions(engine):
            if should_stop():
                break
            try:
                if running_experiment(engine, log, name):
                    continue
                retrain(engine, home, log, name, version, dataset, settings)
            except TweetforgeError:
                failures += 1  # logged by its step; the next model still gets its turn
    except BaseException as exc:
        log.finish(cycle, "failed", error=f"stopped: {type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        release(engine, LOCK)
    outcome = "stopped" if should_stop() else "failed" if failures else "ok"
    log.finish(cycle, outcome, {"steps": len(steps), "failures": failures})
    track_cycle(home, settings.report_to, cycle, steps)
    return CycleResult(cycle, outcome, steps)


def track_cycle(home: Path, report_to: str, cycle_id: int, steps: list[dict]) -> None:
    """The cycle as a tracking run: seconds per step and every number the steps reported."""
    if report_to == "none":
        return
    from tweetforge.training.tracking import Tracker

    metrics: dict[str, float] = {}
    for step in steps:
        prefix = f"{step['step']}/{step['model_name']}" if step["model_name"] else step["step"]
        if step["finished_at"] is not None:
            metrics[f"{prefix}/seconds"] = (step["finished_at"] - step["started_at"]).total_seconds()
        metrics[f"{prefix}/failed"] = float(step["outcome"] in ("failed", "killed"))
        for key, value in (step["numbers"] or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[f"{prefix}/{key}"] = float(value)
    tracker = Tracker(report_to, home, f"pipeline-cycle-{cycle_id}", {"cycle": cycle_id})
    tracker.log(metrics, step=0)
    tracker.finish()


def describe_numbers(numbers: dict[str, Any] | None) -> str:
    """A step's numbers as one line, for the CLI and the dashboard."""
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in (numbers or {}).items())


def pipeline_history(engine: Engine, limit: int = 50) -> list[dict]:
    """The newest cycles, each with its steps."""
    with engine.connect() as conn:
        cycles = conn.execute(select(pipeline_runs).where(pipeline_runs.c.step == "cycle")
                              .order_by(pipeline_runs.c.id.desc()).limit(limit)).all()
        ids = [c.id for c in cycles]
        steps = conn.execute(select(pipeline_runs).where(pipeline_runs.c.cycle_id.in_(ids)).order_by(pipeline_runs.c.id)).all() if ids else []
    by_cycle: dict[int, list[dict]] = {}
    for s in steps:
        by_cycle.setdefault(s.cycle_id, []).append(dict(s._mapping))
    return [dict(c._mapping) | {"steps": by_cycle.get(c.id, [])} for c in cycles]


def watch(engine: Engine, home: Path, settings: WatchSettings, *, every_s: float, should_stop: Callable[[], bool],
          on_step: Callable[[dict], None] | None = None, on_error: Callable[[Exception], None] | None = None) -> int:
    """Cycles every `every_s` seconds until should_stop(); returns the number of cycles run."""
    cycles = 0
    while not should_stop():
        started = time.monotonic()
        try:
            run_cycle(engine, home, settings, on_step=on_step, should_stop=should_stop)
            cycles += 1
        except TweetforgeError as exc:
            if on_error:
                on_error(exc)
        while not should_stop() and time.monotonic() - started < every_s:
            time.sleep(min(1.0, every_s))
    return cycles


def parse_every(text: str) -> float:
    """'15m', '1h', '90s' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    try:
        if value and value[-1] in units:
            seconds = float(value[:-1]) * units[value[-1]]
        else:
            seconds = float(value)
    except ValueError:
        raise TweetforgeError(f"--every {text!r}: use a duration such as 15m, 1h or 90s") from None
    if seconds <= 0:
        raise TweetforgeError(f"--every {text!r}: the interval must be positive")
    return seconds
