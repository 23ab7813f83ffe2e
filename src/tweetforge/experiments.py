"""A/B experiments between model versions: variants with traffic weights, sticky assignment by a hash of
(experiment, user), every served generation logged as an exposure, feedback events committed before
they are acknowledged, and an arena mode where one request shows two anonymous posts from two variants
and the user picks the better one."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update

from tweetforge.registry import RegistryError, resolve
from tweetforge.store.schema import experiment_variants, experiments, feedback, generations

METRICS = {"like": "like", "share": "share", "arena": "choice"}
"""Primary metric -> the feedback event that counts as a conversion (arena: a won comparison)."""
FEEDBACK_EVENTS = ("like", "dislike", "copy", "share", "choice")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


class ExperimentError(Exception):
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


def create_experiment(engine: Engine, name: str, variants: list[tuple[str, str, float]], metric: str = "like",
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
    with engine.begin() as conn:
        if conn.execute(select(experiments.c.name).where(experiments.c.name == name)).first():
            raise ExperimentError(f"experiment {name!r} exists already (tweetforge ab status {name})")
        conn.execute(insert(experiments).values(name=name, metric=metric, min_sample=min_sample, alpha=alpha,
                                                auto_promote=auto_promote, status="running", created_at=datetime.now()))
        conn.execute(insert(experiment_variants), [
            {"experiment": name, "variant": v.name, "model_name": v.model_name, "model_version": v.model_version, "weight": v.weight}
            for v in resolved
        ])
    return get_experiment(engine, name)


def _from_rows(row: Any, variant_rows: list[Any]) -> Experiment:
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
    u = _unit(experiment.name, user_id) * sum(v.weight for v in experiment.variants)
    for v in experiment.variants:
        if u < v.weight:
            return v
        u -= v.weight
    return experiment.variants[-1]


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


def log_generation(engine: Engine, model_name: str, model_version: int, prompt: str, params: dict[str, Any], posts: list[dict[str, Any]],
                   user_id: str | None = None, experiment: str | None = None, variant: str | None = None, pair_id: str | None = None) -> str:
    """Record a served generation (an exposure when it is part of an experiment); returns its id."""
    generation_id = str(uuid.uuid4())
    with engine.begin() as conn:
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
    with engine.begin() as conn:
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
    with engine.begin() as conn:
        conn.execute(update(experiments).where(experiments.c.name == name).values(status="stopped", stopped_at=datetime.now()))
    return get_experiment(engine, name)
