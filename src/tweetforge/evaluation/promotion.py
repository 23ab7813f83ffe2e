"""The promotion gate: a version becomes its name's champion only if, on the candidate's test split, its
bits per character are no worse than the champion's by more than a margin and it copies training posts
no more often than a threshold. Every decision (refusals and forced promotions included) is logged."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select

from tweetforge.db.engine import writing
from tweetforge.db.schema import promotions
from tweetforge.errors import TweetforgeError
from tweetforge.evaluation.evaluate import EvalSettings, EvaluationProgress, run_evaluations
from tweetforge.registry.versions import ModelVersion, RegistryError, point_alias, resolve

DEFAULT_MARGIN = 0.01
DEFAULT_MAX_COPY_RATE = 0.01


class PromotionError(TweetforgeError):
    """A promotion that cannot be decided (unknown model, already champion)."""


@dataclass
class Decision:
    candidate: ModelVersion
    champion: ModelVersion | None
    alias: str
    promoted: bool
    forced: bool
    reasons: list[str]
    """Why the gate refuses (empty when it passes)."""
    candidate_metrics: dict[str, Any]
    champion_metrics: dict[str, Any] | None
    dataset: str


def _who() -> str:
    try:
        return os.environ.get("TWEETFORGE_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def gate(candidate: dict[str, Any], champion: dict[str, Any] | None, margin: float, max_copy_rate: float) -> list[str]:
    reasons = []
    if champion is not None and candidate["bits_per_char"] > champion["bits_per_char"] * (1 + margin):
        worse = candidate["bits_per_char"] / champion["bits_per_char"] - 1
        reasons.append(f"bits per char {candidate['bits_per_char']:.4f} vs champion {champion['bits_per_char']:.4f}: "
                       f"{100 * worse:.1f}% worse, margin {100 * margin:g}%")
    if candidate["copy_rate"] > max_copy_rate:
        reasons.append(f"copy rate {100 * candidate['copy_rate']:.1f}% of generated posts (before the filter) "
                       f"above the {100 * max_copy_rate:g}% threshold")
    return reasons


def promote(engine: Engine, home: Path, ref: str, *, alias: str = "champion", margin: float = DEFAULT_MARGIN,
            max_copy_rate: float = DEFAULT_MAX_COPY_RATE, force: bool = False, settings: EvalSettings | None = None,
            report_to: str = "trackio", progress: EvaluationProgress | None = None) -> Decision:
    try:
        candidate = resolve(engine, ref)
    except RegistryError as exc:
        raise PromotionError(str(exc)) from None
    try:
        champion = resolve(engine, f"{candidate.name}:{alias}")
    except RegistryError:
        champion = None
    if champion is not None and champion.version == candidate.version:
        raise PromotionError(f"{candidate.ref} is already {candidate.name}:{alias}")
    refs = [candidate.ref] + ([champion.ref] if champion else [])
    results = run_evaluations(engine, home, refs, candidate.dataset, settings or EvalSettings(), report_to=report_to,
                              progress=progress).evaluations
    candidate_metrics = results[0].metrics
    champion_metrics = results[1].metrics if champion else None
    reasons = gate(candidate_metrics, champion_metrics, margin, max_copy_rate)
    promoted = not reasons or force
    decision = Decision(candidate, champion, alias, promoted, force and bool(reasons), reasons, candidate_metrics, champion_metrics,
                        candidate.dataset)
    with writing(engine) as conn:
        if promoted:
            point_alias(conn, candidate.name, alias, candidate.version)
        conn.execute(insert(promotions).values(
            name=candidate.name, alias=alias, from_version=champion.version if champion else None, to_version=candidate.version,
            promoted=promoted, forced=decision.forced, who=_who(), at=datetime.now(), dataset=candidate.dataset,
            candidate=_headline(candidate_metrics), champion=_headline(champion_metrics) if champion_metrics else None,
            reason="; ".join(reasons) if reasons else f"passed the gate (margin {100 * margin:g}%, copy threshold {100 * max_copy_rate:g}%)",
        ))
    return decision


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in ("bits_per_char", "copy_rate", "copy_rate_filtered", "detectability", "distinct_2", "test_posts")}


def promotion_log(engine: Engine, name: str | None = None) -> list[dict[str, Any]]:
    query = select(promotions).order_by(promotions.c.id)
    if name:
        query = query.where(promotions.c.name == name)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
