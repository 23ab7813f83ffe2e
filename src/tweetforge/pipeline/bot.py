"""`tweetforge bot`: the HuggingTweets experience in one call. Sources (live handles, files, examples)
go all the way: import, the cleaning table, a snapshot, a model trained within a time budget,
evaluation against the Markov chain and the untuned base, registration with its card, and five
generated posts (in the generation log, marked generated). Every stage is the same function its own
command calls; this module only puts them in order."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select

from tweetforge.data.clean import CleaningRules, clean, cleaning_stats
from tweetforge.data.generated import refused_by_author
from tweetforge.data.ingest import ingest
from tweetforge.data.snapshots import SnapshotRequest, create_snapshot
from tweetforge.data.sources import open_source
from tweetforge.data.sources.live import is_live, parse_handle
from tweetforge.data.store import read_posts
from tweetforge.data.sync import sync_account
from tweetforge.db.schema import datasets
from tweetforge.errors import TweetforgeError

if TYPE_CHECKING:
    from tweetforge.evaluation.evaluate import Comparison
    from tweetforge.evaluation.promotion import Decision
    from tweetforge.generation.generate import Generation
    from tweetforge.registry.versions import ModelVersion

DEFAULT_MINUTES = 8.0
"""A cap, not a target: the default recipe (one epoch, benchmarks/time_to_quality.py) ends by itself on a
few thousand posts, in 412 s on a slow 2-core CPU (110 GFLOP/s fp32); the cap bounds a large timeline."""


class BotError(TweetforgeError):
    """A bot run that cannot go on: the message says which stage and why."""


@dataclass
class BotRun:
    name: str
    authors: list[str] = field(default_factory=list)
    imports: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict] = field(default_factory=list)
    dataset: str | None = None
    version: ModelVersion | None = None
    comparison: Comparison | None = None
    generation: Generation | None = None
    promotion: Decision | None = None
    """The gate's decision when this was the name's first model (None: a champion existed already)."""
    seconds: dict[str, float] = field(default_factory=dict)


def default_name(specs: list[str]) -> str:
    """alice.bsky.social → alice; @bob@mastodon.social → bob; a file → its stem; several joined by '-'."""
    parts = []
    for spec in specs:
        if is_live(spec):
            account = parse_handle(spec).account
            parts.append(re.split(r"[.@]", account)[0])
        elif spec.startswith("example:"):
            parts.append(spec.split(":", 1)[1])
        else:
            parts.append(Path(spec).stem)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-.")[:60] or "bot"
    return name if name[0].isalnum() else "bot-" + name


def next_dataset_name(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        taken = set(conn.execute(select(datasets.c.name).where(datasets.c.name.like(f"{name}-v%"))).scalars())
    n = 1
    while f"{name}-v{n}" in taken:
        n += 1
    return f"{name}-v{n}"


def run_bot(
    engine: Engine,
    home: Path,
    specs: list[str],
    *,
    name: str | None = None,
    minutes: float = DEFAULT_MINUTES,
    base: str | None = None,
    base_url: str | None = None,
    samples: int = 100,
    report_to: str = "trackio",
    on_stage: Callable[[str, BotRun], None] | None = None,
    sync_progress: Callable | None = None,
    train_progress: Callable | None = None,
    eval_progress: Callable | None = None,
) -> BotRun:
    """Run every stage in order; `on_stage(stage, run)` is told after each (the CLI prints it)."""
    run = BotRun(name=name or default_name(specs))

    def done(stage: str, started: float) -> None:
        run.seconds[stage] = round(time.perf_counter() - started, 1)
        if on_stage:
            on_stage(stage, run)

    started = time.perf_counter()
    for spec in specs:
        if is_live(spec) and not Path(spec).exists():
            synced = sync_account(engine, parse_handle(spec), base_url=base_url, progress=sync_progress)
            run.imports.append({"source": synced.spec, "new": synced.new, "fetched": synced.fetched})
            authors = [synced.account]
        else:
            result = ingest(engine, open_source(spec))
            run.imports.append({"source": spec, "new": result.new, "fetched": result.records})
            authors = list(result.authors)
        run.authors += [a for a in authors if a.lower() not in {b.lower() for b in run.authors}]
    if not run.authors:
        raise BotError("import: no authors in " + ", ".join(specs))
    done("import", started)

    started = time.perf_counter()
    with engine.connect() as conn:
        frame = read_posts(conn, run.authors)
        refused = refused_by_author(conn)
    run.stats = cleaning_stats(clean(frame, CleaningRules()), refused)
    done("stats", started)

    started = time.perf_counter()
    from tweetforge.config import get_settings

    run.dataset = next_dataset_name(engine, run.name)
    snapshot = create_snapshot(engine, get_settings().datasets_location, SnapshotRequest(name=run.dataset, authors=tuple(run.authors)))
    done("snapshot", started)

    started = time.perf_counter()
    from tweetforge.registry.versions import register, resolve
    from tweetforge.training.train import TrainConfig, train

    config = TrainConfig(dataset=run.dataset, name=run.name, max_minutes=minutes, report_to=report_to,
                         **({"base": base} if base else {}))
    result = train(config, snapshot, home, progress=train_progress, resolve_from=lambda ref: resolve(engine, ref).path)
    run.version = register(engine, get_settings().models_location, result, snapshot)
    done("train", started)

    started = time.perf_counter()
    from tweetforge.evaluation.evaluate import EvalSettings, run_evaluations, untuned_base_of

    refs = [run.version.ref, "markov"] + (["base"] if untuned_base_of(engine, run.version) else [])
    run.comparison = run_evaluations(engine, home, refs, run.dataset, EvalSettings(samples=samples), fresh=(run.version.ref,),
                                     report_to=report_to, progress=eval_progress)
    run.version = resolve(engine, run.version.ref)
    done("evaluate", started)

    started = time.perf_counter()
    from tweetforge.evaluation.promotion import promote

    try:
        resolve(engine, f"{run.name}:champion")
    except TweetforgeError:  # a name's first model: through the gate (copy rate) to champion, which serve and watch use
        run.promotion = promote(engine, home, run.version.ref, settings=EvalSettings(samples=samples), report_to=report_to)
        run.version = resolve(engine, run.version.ref)
    done("promote", started)

    started = time.perf_counter()
    from tweetforge.experiments.ab import log_generation
    from tweetforge.generation.generate import generate_posts
    from tweetforge.registry.versions import ensure_copy_index

    ensure_copy_index(engine, run.version)
    run.generation = generate_posts(run.version, "", 5, seed=7)
    log_generation(engine, run.version.name, run.version.version, prompt="", user_id="bot", params={"n": 5, "seed": 7, "source": "bot"},
                   posts=[{"text": p.text, "generated": True} for p in run.generation.posts])
    done("generate", started)
    return run
