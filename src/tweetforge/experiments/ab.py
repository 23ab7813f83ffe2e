"""A/B experiments between model versions: variants with traffic weights, sticky assignment by a hash of
(experiment, user), every served generation logged as an exposure, feedback events committed before
they are acknowledged, and an arena mode where one request shows two anonymous posts from two variants
and the user picks the better one."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, insert, select, update

from tweetforge.db.engine import writing
from tweetforge.db.schema import (
    experiment_decisions,
    experiment_variants,
    experiments,
    feedback,
    generations,
)
from tweetforge.errors import TweetforgeError
from tweetforge.registry.versions import RegistryError, resolve

METRICS = {"like": "like", "share": "share", "arena": "choice"}
"""Primary metric -> the feedback event that counts as a conversion (arena: a won comparison)."""
FEEDBACK_EVENTS = ("like", "dislike", "copy", "share", "choice")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


class ExperimentError(TweetforgeError):
    """An experiment that cannot be created or used as asked; the message says why."""


@dataclass(frozen=True)
class Variant:
    name: str
    model_name: str
    model_version: int
    weight: float

    @property
    def model_ref(self) -> str:
        return f"{self.model_name}:{self.model_version}"


@dataclass
class Experiment:
    name: str
    metric: str
    min_sample: int
    alpha: float
    auto_promote: bool
    status: str
    created_at: datetime
    variants: list[Variant] = field(default_factory=list)
    stopped_at: datetime | None = None
    winner: str | None = None

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ExperimentError(f"experiment {self.name} has no variant {name!r} (variants: {', '.join(v.name for v in self.variants)})")

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "metric": self.metric, "min_sample": self.min_sample, "alpha": self.alpha,
            "auto_promote": self.auto_promote, "status": self.status, "created_at": self.created_at.isoformat(timespec="seconds"),
            "stopped_at": self.stopped_at.isoformat(timespec="seconds") if self.stopped_at else None, "winner": self.winner,
            "variants": [{"name": v.name, "model": v.model_ref, "weight": v.weight} for v in self.variants],
        }


def parse_variant(spec: str) -> tuple[str, str, float]:
    """'gpt=elon:4:50' -> ('gpt', 'elon:4', 50.0): NAME=MODEL:WEIGHT, MODEL being NAME, NAME:VERSION or NAME:ALIAS."""
    name, sep, rest = spec.partition("=")
    model, colon, weight = rest.rpartition(":")
    if not sep or not name or not colon or not model:
        raise ExperimentError(f"variant {spec!r}: write NAME=MODEL:WEIGHT, e.g. gpt=elon:4:50")
    try:
        value = float(weight)
    except ValueError:
        raise ExperimentError(f"variant {spec!r}: weight {weight!r} is not a number") from None
    return name, model, value


def create_experiment(engine: Engine, name: str, variants: list[tuple[str, str, float]], *, metric: str = "like",
                      min_sample: int = 1000, alpha: float = 0.05, auto_promote: bool = False) -> Experiment:
    if not NAME_PATTERN.match(name):
        raise ExperimentError(f"experiment name {name!r}: lower-case letters, digits, '.', '_' and '-'")
    if metric not in METRICS:
        raise ExperimentError(f"metric {metric!r}: use one of {', '.join(METRICS)}")
    if len(variants) < 2:
        raise ExperimentError("an experiment needs at least two variants")
    if len({v[0] for v in variants}) != len(variants):
        raise ExperimentError("variant names must differ")
    if any(not w > 0 for _, _, w in variants):
        raise ExperimentError("every variant needs a weight above 0")
    if min_sample < 1 or not 0 < alpha < 1:
        raise ExperimentError("min sample must be at least 1 and alpha in (0, 1)")
    resolved = []
    for variant, ref, weight in variants:
        try:
            version = resolve(engine, ref)
        except RegistryError as exc:
            raise ExperimentError(f"variant {variant}: {exc}") from None
        resolved.append(Variant(variant, version.name, version.version, weight))
    with writing(engine) as conn:
        if conn.execute(select(experiments.c.name).where(experiments.c.name == name)).first():
            raise ExperimentError(f"experiment {name!r} exists already (tweetforge ab status {name})")
        conn.execute(insert(experiments).values(name=name, metric=metric, min_sample=min_sample, alpha=alpha,
                                                auto_promote=auto_promote, status="running", created_at=datetime.now()))
        conn.execute(insert(experiment_variants), [
            {"experiment": name, "variant": v.name, "model_name": v.model_name, "model_version": v.model_version, "weight": v.weight}
            for v in resolved
        ])
    return get_experiment(engine, name)


def _from_rows(row: Row, variant_rows: list[Row]) -> Experiment:
    return Experiment(
        name=row.name, metric=row.metric, min_sample=row.min_sample, alpha=row.alpha, auto_promote=row.auto_promote,
        status=row.status, created_at=row.created_at, stopped_at=row.stopped_at, winner=row.winner,
        variants=[Variant(v.variant, v.model_name, v.model_version, v.weight) for v in sorted(variant_rows, key=lambda v: v.variant)],
    )


def get_experiment(engine: Engine, name: str) -> Experiment:
    with engine.connect() as conn:
        row = conn.execute(select(experiments).where(experiments.c.name == name)).first()
        if row is None:
            known = [r.name for r in conn.execute(select(experiments.c.name).order_by(experiments.c.name))]
            hint = f" (experiments: {', '.join(known)})" if known else " (none yet: tweetforge ab create NAME --variant ...)"
            raise ExperimentError(f"no experiment named {name!r}{hint}")
        variant_rows = conn.execute(select(experiment_variants).where(experiment_variants.c.experiment == name)).all()
    return _from_rows(row, variant_rows)


def list_experiments(engine: Engine) -> list[Experiment]:
    with engine.connect() as conn:
        rows = conn.execute(select(experiments).order_by(experiments.c.created_at)).all()
        variant_rows = conn.execute(select(experiment_variants)).all()
    return [_from_rows(r, [v for v in variant_rows if v.experiment == r.name]) for r in rows]


def _unit(*parts: str) -> float:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment: Experiment, user_id: str) -> Variant:
    """The user's variant: a hash of (experiment, user) placed on the cumulative traffic weights, so a user
    always sees the same variant and traffic splits as the weights say."""
    return _weighted(experiment.variants, _unit(experiment.name, user_id))


def arena_pair(experiment: Experiment, user_id: str, request_id: str) -> tuple[Variant, Variant]:
    """Two different variants for one arena comparison, in a random order (so that the left side wins no
    more often for being on the left); with more than two variants, a weighted draw of two."""
    variants = list(experiment.variants)
    first = _weighted(variants, _unit(experiment.name, user_id, request_id, "first"))
    rest = [v for v in variants if v is not first]
    second = _weighted(rest, _unit(experiment.name, user_id, request_id, "second"))
    return (first, second) if _unit(request_id, "order") < 0.5 else (second, first)


def _weighted(variants: list[Variant], u: float) -> Variant:
    u *= sum(v.weight for v in variants)
    for v in variants:
        if u < v.weight:
            return v
        u -= v.weight
    return variants[-1]


def new_user_id() -> str:
    return f"anon-{uuid.uuid4().hex[:16]}"


def log_generation(engine: Engine, model_name: str, model_version: int, prompt: str, params: dict[str, Any], posts: list[dict[str, Any]], *,
                   user_id: str | None = None, experiment: str | None = None, variant: str | None = None, pair_id: str | None = None) -> str:
    """Record a served generation (an exposure when it is part of an experiment); returns its id."""
    generation_id = str(uuid.uuid4())
    with writing(engine) as conn:
        conn.execute(insert(generations).values(
            id=generation_id, created_at=datetime.now(), model_name=model_name, model_version=model_version, experiment=experiment,
            variant=variant, pair_id=pair_id, user_id=user_id, prompt=prompt, params=params, posts=posts,
        ))
    return generation_id


def record_feedback(engine: Engine, generation_id: str, event: str, winner_id: str | None = None, user_id: str | None = None) -> int:
    """Store one feedback event; returns its id once the transaction has committed. `choice` (arena) names
    the generation of the pair that won in winner_id, or None for "both bad"."""
    if event not in FEEDBACK_EVENTS:
        raise ExperimentError(f"event {event!r}: use one of {', '.join(FEEDBACK_EVENTS)}")
    with writing(engine) as conn:
        row = conn.execute(select(generations.c.id, generations.c.pair_id).where(generations.c.id == generation_id)).first()
        if row is None:
            raise ExperimentError(f"no generation {generation_id!r}")
        if event == "choice":
            if row.pair_id is None:
                raise ExperimentError(f"generation {generation_id} was not shown in an arena: 'choice' needs an arena generation")
            if winner_id is not None:
                pair = {r.id for r in conn.execute(select(generations.c.id).where(generations.c.pair_id == row.pair_id))}
                if winner_id not in pair:
                    raise ExperimentError(f"winner {winner_id!r} is not one of the two generations of this comparison")
        elif winner_id is not None:
            raise ExperimentError("winner_id is only for 'choice' events")
        result = conn.execute(insert(feedback).values(generation_id=generation_id, event=event, winner_id=winner_id,
                                                      user_id=user_id, created_at=datetime.now()))
        return int(result.inserted_primary_key[0])


def stop_experiment(engine: Engine, name: str) -> Experiment:
    experiment = get_experiment(engine, name)
    if experiment.status != "running":
        raise ExperimentError(f"experiment {name} is {experiment.status} already")
    with writing(engine) as conn:
        conn.execute(update(experiments).where(experiments.c.name == name).values(status="stopped", stopped_at=datetime.now()))
    return get_experiment(engine, name)


# ---------------------------------------------------------------- results and decisions

LOOK_EVERY = 100
"""The sequential test looks at the data after every LOOK_EVERY exposures (arena: comparisons)."""


@dataclass
class VariantResult:
    variant: str
    model: str
    exposures: int
    """Generations served (arena: decisive comparisons it took part in)."""
    conversions: int
    """Generations with the metric's event (arena: comparisons won)."""
    rate: float
    low: float
    high: float
    p_best: float


@dataclass
class ExperimentStatus:
    experiment: Experiment
    results: list[VariantResult]
    state: str
    winner: str | None
    reason: str
    always_valid_p: float
    timeline: dict[str, Any]
    """Per look: time, and per variant cumulative exposures and conversions; the always-valid p-value."""
    ties: int = 0
    """Arena comparisons judged "both bad"."""

    def summary(self) -> dict[str, Any]:
        return {"experiment": self.experiment.summary(), "state": self.state, "winner": self.winner, "reason": self.reason,
                "always_valid_p": self.always_valid_p, "ties": self.ties,
                "variants": [r.__dict__ for r in self.results]}


def _looks(times: list[datetime], every: int) -> list[datetime]:
    """After every `every` events, and now (so that feedback that came after the last exposure counts)."""
    ordered = sorted(times)
    if not ordered:
        return []
    return [ordered[i - 1] for i in range(every, len(ordered) + 1, every)] + [max(datetime.now(), ordered[-1])]


def _cumulative(times: list[datetime], looks: list[datetime]) -> list[int]:
    import bisect

    ordered = sorted(times)
    return [bisect.bisect_right(ordered, t) for t in looks]


def experiment_status(engine: Engine, name: str) -> ExperimentStatus:
    """Rates with Wilson intervals, P(best), and the always-valid decision, from the logged exposures and
    feedback. Each look counts what had happened by its time, so feedback that arrives later is not
    credited to earlier looks."""
    experiment = get_experiment(engine, name)
    with engine.connect() as conn:
        served = conn.execute(select(generations.c.id, generations.c.variant, generations.c.created_at, generations.c.pair_id)
                              .where(generations.c.experiment == name)).all()
        events = conn.execute(select(feedback.c.generation_id, feedback.c.event, feedback.c.winner_id, feedback.c.created_at)
                              .join(generations, generations.c.id == feedback.c.generation_id)
                              .where(generations.c.experiment == name).order_by(feedback.c.id)).all()
    if experiment.metric == "arena":
        return _arena_status(experiment, served, events)
    variant_of = {g.id: g.variant for g in served}
    exposed: dict[str, list[datetime]] = {v.name: [] for v in experiment.variants}
    for g in served:
        exposed.setdefault(g.variant, []).append(g.created_at)
    first_conversion: dict[str, datetime] = {}
    for e in events:
        if e.event == METRICS[experiment.metric] and e.generation_id not in first_conversion:
            first_conversion[e.generation_id] = e.created_at
    converted: dict[str, list[datetime]] = {v.name: [] for v in experiment.variants}
    for generation_id, at in first_conversion.items():
        converted[variant_of[generation_id]].append(at)
    looks = _looks([g.created_at for g in served], LOOK_EVERY)
    timeline = {"looks": looks, "exposures": {v: _cumulative(t, looks) for v, t in exposed.items()},
                "conversions": {v: _cumulative(converted[v], looks) for v in exposed}}
    return _two_proportion_status(experiment, timeline)


def _two_proportion_status(experiment: Experiment, timeline: dict[str, Any]) -> ExperimentStatus:
    from tweetforge.experiments import statistics as ab_stats

    names = [v.name for v in experiment.variants]
    exposures = [timeline["exposures"][v][-1] if timeline["looks"] else 0 for v in names]
    conversions = [timeline["conversions"][v][-1] if timeline["looks"] else 0 for v in names]
    p_best = ab_stats.probability_best(conversions, exposures)
    results = []
    for i, v in enumerate(experiment.variants):
        rate = ab_stats.rate_with_interval(conversions[i], exposures[i])
        results.append(VariantResult(v.name, v.model_ref, exposures[i], conversions[i], rate.rate, rate.low, rate.high, float(p_best[i])))
    if not timeline["looks"]:
        return ExperimentStatus(experiment, results, "collecting", None, "no exposures yet", 1.0, timeline)
    # the two leading variants by rate; with more than two, Bonferroni over the k - 1 comparisons with the leader
    order = sorted(range(len(names)), key=lambda i: (conversions[i] / exposures[i]) if exposures[i] else -1, reverse=True)
    a, b = order[1], order[0]
    alpha = experiment.alpha / (len(names) - 1)
    decision = ab_stats.decide(
        ab_stats.VariantHistory(names[a], timeline["exposures"][names[a]], timeline["conversions"][names[a]]),
        ab_stats.VariantHistory(names[b], timeline["exposures"][names[b]], timeline["conversions"][names[b]]),
        min_exposures=experiment.min_sample, alpha=alpha,
    )
    timeline["p_values"] = ab_stats.msprt_p_values(timeline["conversions"][names[a]], timeline["exposures"][names[a]],
                                                    timeline["conversions"][names[b]], timeline["exposures"][names[b]]).tolist()
    return ExperimentStatus(experiment, results, decision.state, decision.winner, decision.reason, decision.always_valid_p, timeline)


def _arena_status(experiment: Experiment, served: list[Any], events: list[Any]) -> ExperimentStatus:
    """Win rates of pairwise comparisons: each arena pair's first choice counts once; "both bad" is a tie."""
    from scipy.stats import beta

    from tweetforge.experiments import statistics as ab_stats

    variant_of = {g.id: g.variant for g in served}
    pair_of = {g.id: g.pair_id for g in served}
    judged: set[str] = set()
    comparisons: list[tuple[datetime, str, str]] = []  # (time, winner variant, loser variant)
    ties = 0
    for e in events:
        if e.event != "choice" or pair_of.get(e.generation_id) in judged:
            continue
        pair = pair_of[e.generation_id]
        judged.add(pair)
        if e.winner_id is None:
            ties += 1
            continue
        loser = next(g.id for g in served if g.pair_id == pair and g.id != e.winner_id)
        comparisons.append((e.created_at, variant_of[e.winner_id], variant_of[loser]))
    names = [v.name for v in experiment.variants]
    looks = _looks([c[0] for c in comparisons], LOOK_EVERY)
    taking_part = {v: _cumulative([t for t, winner, loser in comparisons if v in (winner, loser)], looks) for v in names}
    wins = {v: _cumulative([t for t, w, _ in comparisons if w == v], looks) for v in names}
    timeline = {"looks": looks, "exposures": taking_part, "conversions": wins}
    results = []
    for v in experiment.variants:
        n, k = (taking_part[v.name][-1], wins[v.name][-1]) if looks else (0, 0)
        rate = ab_stats.win_rate(k, n)
        results.append(VariantResult(v.name, v.model_ref, n, k, rate.rate, rate.low, rate.high, float(1 - beta.cdf(0.5, k + 1, n - k + 1))))
    if len(names) != 2:
        return ExperimentStatus(experiment, results, "collecting", None, "arena decisions are made between two variants", 1.0, timeline, ties)
    if not looks:
        return ExperimentStatus(experiment, results, "collecting", None, "no comparisons yet", 1.0, timeline, ties)
    second = names[1]
    p_values = ab_stats.arena_p_values(wins[second], taking_part[second])
    timeline["p_values"] = p_values.tolist()
    p, n = float(p_values[-1]), taking_part[second][-1]
    leader = max(results, key=lambda r: r.rate) if results[0].rate != results[1].rate else None
    if n < experiment.min_sample:
        state, winner, reason = "collecting", None, f"{n} of the minimum {experiment.min_sample} comparisons (always-valid p = {p:.3g})"
    elif p < experiment.alpha and leader is not None:
        state, winner, reason = "winner", leader.variant, f"{leader.variant} wins {leader.rate:.1%} of comparisons, always-valid p = {p:.3g}"
    else:
        state, winner, reason = "no difference yet", None, f"always-valid p = {p:.3g} >= {experiment.alpha:g}"
    return ExperimentStatus(experiment, results, state, winner, reason, p, timeline, ties)


def apply_decision(engine: Engine, status: ExperimentStatus) -> bool:
    """Log a newly conclusive result; with auto_promote, make the winner its name's champion and end the
    experiment. Returns whether something was promoted."""
    experiment = status.experiment
    if status.state != "winner" or experiment.status != "running":
        return False
    with engine.connect() as conn:
        last = conn.execute(select(experiment_decisions.c.state, experiment_decisions.c.winner)
                            .where(experiment_decisions.c.experiment == experiment.name).order_by(experiment_decisions.c.id.desc())).first()
    if not experiment.auto_promote:
        if last is None or (last.state, last.winner) != ("winner", status.winner):
            _log_decision(engine, status, promoted=False)
        return False
    promote_variant(engine, experiment.name, status.winner, status)
    return True


def _log_decision(engine: Engine, status: ExperimentStatus, promoted: bool, conn: Connection | None = None) -> None:
    values = dict(experiment=status.experiment.name, at=datetime.now(), state=status.state, winner=status.winner, promoted=promoted,
                  statistics=json_safe({"reason": status.reason, "always_valid_p": status.always_valid_p,
                                         "variants": [r.__dict__ for r in status.results]}))
    if conn is not None:
        conn.execute(insert(experiment_decisions).values(**values))
        return
    with writing(engine) as own:
        own.execute(insert(experiment_decisions).values(**values))


def promote_variant(engine: Engine, name: str, variant: str | None, status: ExperimentStatus | None = None) -> Variant:
    """Make a variant's model version its name's champion and end the experiment; without a variant, the
    winner of a conclusive experiment. Logged with the statistics of the moment."""
    from tweetforge.registry.versions import point_alias

    status = status or experiment_status(engine, name)
    chosen = variant or status.winner
    if chosen is None:
        raise ExperimentError(f"experiment {name} has no winner yet ({status.state}: {status.reason}); name a variant to promote it anyway")
    target = status.experiment.variant(chosen)
    with writing(engine) as conn:
        # the transition is taken once: replicas deciding the same experiment at the same moment promote it once
        ended = conn.execute(update(experiments).where(experiments.c.name == name, experiments.c.status.in_(("running", "stopped")))
                             .values(status="decided", winner=chosen, stopped_at=datetime.now()))
        if ended.rowcount == 0:
            winner = conn.execute(select(experiments.c.winner).where(experiments.c.name == name)).scalar_one()
            if winner == chosen:
                return target  # another replica promoted the same winner just now
            raise ExperimentError(f"experiment {name} was decided already (winner {winner})")
        point_alias(conn, target.model_name, "champion", target.model_version)
        _log_decision(engine, replace(status, winner=chosen), promoted=True, conn=conn)
    return target


def json_safe(value: Any) -> Any:
    """NaN (a rate with no exposures) is not JSON: null instead."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def decision_log(engine: Engine, name: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(experiment_decisions).where(experiment_decisions.c.experiment == name).order_by(experiment_decisions.c.id))
        return [dict(r._mapping) for r in rows]
