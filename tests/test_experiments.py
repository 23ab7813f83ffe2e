"""A/B experiments: creation errors, sticky weighted assignment, arena pairs, durable feedback."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import quick, table_dump
from tweetforge.experiments.ab import (
    ExperimentError,
    arena_pair,
    assign,
    create_experiment,
    get_experiment,
    log_generation,
    parse_variant,
    record_feedback,
    stop_experiment,
)
from tweetforge.registry.versions import register
from tweetforge.training.train import train


@pytest.fixture(scope="module")
def two_versions(tiny_gpt2, store):
    home, engine, trump, _ = store
    return [register(engine, home / "models", train(quick(tiny_gpt2, max_steps=2, name="tiny-ab"), trump, home), trump) for _ in range(2)]


def test_parse_variant():
    assert parse_variant("gpt=elon:4:50") == ("gpt", "elon:4", 50.0)
    assert parse_variant("lstm=elon-lstm:champion:25.5") == ("lstm", "elon-lstm:champion", 25.5)
    with pytest.raises(ExperimentError, match="NAME=MODEL:WEIGHT"):
        parse_variant("gpt=elon")
    with pytest.raises(ExperimentError, match="weight 'x' is not a number"):
        parse_variant("gpt=elon:4:x")


def test_create_validates_and_assignment_is_sticky_and_weighted(two_versions, store):
    _, engine, _, _ = store
    a, b = two_versions
    with pytest.raises(ExperimentError, match="variant b: no model named 'nope'"):
        create_experiment(engine, "bad", [("a", a.ref, 1), ("b", "nope:1", 1)])
    with pytest.raises(ExperimentError, match="metric 'clicks'"):
        create_experiment(engine, "bad", [("a", a.ref, 1), ("b", b.ref, 1)], metric="clicks")
    with pytest.raises(ExperimentError, match="at least two variants"):
        create_experiment(engine, "bad", [("a", a.ref, 1)])
    experiment = create_experiment(engine, "sticky", [("a", a.ref, 75), ("b", b.ref, 25)])
    assert [v.model_ref for v in experiment.variants] == [a.ref, b.ref] and experiment.status == "running"
    with pytest.raises(ExperimentError, match="exists already"):
        create_experiment(engine, "sticky", [("a", a.ref, 1), ("b", b.ref, 1)])

    users = [f"user-{i}" for i in range(4000)]
    first = [assign(experiment, u).name for u in users]
    assert first == [assign(get_experiment(engine, "sticky"), u).name for u in users]  # sticky, also after a reload
    share = Counter(first)["a"] / len(users)
    assert 0.73 < share < 0.77  # 75% of the traffic, within sampling error

    arena = create_experiment(engine, "arena-test", [("a", a.ref, 1), ("b", b.ref, 1)], metric="arena")
    pairs = [arena_pair(arena, "u1", f"request-{i}") for i in range(400)]
    assert all({x.name, y.name} == {"a", "b"} for x, y in pairs)
    assert 0.4 < sum(x.name == "a" for x, _ in pairs) / len(pairs) < 0.6  # sides are shuffled
    assert stop_experiment(engine, "arena-test").status == "stopped"
    with pytest.raises(ExperimentError, match="stopped already"):
        stop_experiment(engine, "arena-test")


def test_feedback_is_validated_and_stored(two_versions, store):
    _, engine, _, _ = store
    a, b = two_versions
    plain = log_generation(engine, a.name, a.version, "Hi", {"n": 1}, [{"text": "Hi there", "generated": True}], user_id="u1")
    assert record_feedback(engine, plain, "like", user_id="u1") > 0
    before = table_dump(engine, "feedback")
    with pytest.raises(ExperimentError, match="event 'love'"):
        record_feedback(engine, plain, "love")
    with pytest.raises(ExperimentError, match="no generation 'missing'"):
        record_feedback(engine, "missing", "like")
    with pytest.raises(ExperimentError, match="not shown in an arena"):
        record_feedback(engine, plain, "choice", winner_id=plain)
    left = log_generation(engine, a.name, a.version, "", {}, [], experiment="x", variant="a", pair_id="p1")
    right = log_generation(engine, b.name, b.version, "", {}, [], experiment="x", variant="b", pair_id="p1")
    with pytest.raises(ExperimentError, match="not one of the two generations"):
        record_feedback(engine, left, "choice", winner_id=plain)
    assert table_dump(engine, "feedback") == before  # refused events store nothing
    record_feedback(engine, left, "choice", winner_id=right)
    record_feedback(engine, left, "choice", winner_id=None)  # both bad
    assert len(table_dump(engine, "feedback")["feedback"]) == len(before["feedback"]) + 2


def _serve(engine, experiment, variant, liked: bool, event: str = "like"):
    version = experiment.variant(variant)
    generation = log_generation(engine, version.model_name, version.model_version, "", {}, [], experiment=experiment.name, variant=variant)
    if liked:
        record_feedback(engine, generation, event)
    return generation


def test_status_finds_the_better_variant_and_auto_promotes_it(two_versions, store, tmp_path):
    from tweetforge.experiments.ab import (
        apply_decision,
        decision_log,
        experiment_status,
    )
    from tweetforge.experiments.plots import plot_experiment
    from tweetforge.registry.versions import resolve

    _, engine, _, _ = store
    a, b = two_versions
    experiment = create_experiment(engine, "likes", [("a", a.ref, 1), ("b", b.ref, 1)], min_sample=200, auto_promote=True)
    for i in range(300):
        _serve(engine, experiment, "a", liked=i % 10 == 0)  # 10%
        _serve(engine, experiment, "b", liked=i % 10 < 4)   # 40%
        if i == 99:
            early = experiment_status(engine, "likes")
            assert early.state == "collecting" and "of the minimum 200" in early.reason
    status = experiment_status(engine, "likes")
    rates = {r.variant: r for r in status.results}
    assert (rates["a"].exposures, rates["a"].conversions, rates["b"].conversions) == (300, 30, 120)
    assert rates["b"].low < 0.4 < rates["b"].high and rates["b"].p_best > 0.99
    assert status.state == "winner" and status.winner == "b" and status.always_valid_p < 0.05
    assert plot_experiment(status, tmp_path / "ab.png").stat().st_size > 20_000

    assert apply_decision(engine, status)
    assert resolve(engine, f"{b.name}:champion").version == b.version
    assert get_experiment(engine, "likes").status == "decided" and get_experiment(engine, "likes").winner == "b"
    log = decision_log(engine, "likes")
    assert len(log) == 1 and log[0]["promoted"] and log[0]["winner"] == "b"


def test_arena_win_rate_counts_each_comparison_once(two_versions, store):
    from tweetforge.experiments.ab import experiment_status

    _, engine, _, _ = store
    a, b = two_versions
    create_experiment(engine, "arena-wins", [("a", a.ref, 1), ("b", b.ref, 1)], metric="arena", min_sample=100)
    for i in range(200):
        left = log_generation(engine, a.name, a.version, "", {}, [], experiment="arena-wins", variant="a", pair_id=f"pair-{i}")
        right = log_generation(engine, b.name, b.version, "", {}, [], experiment="arena-wins", variant="b", pair_id=f"pair-{i}")
        winner = None if i % 20 == 0 else (right if i % 4 else left)
        record_feedback(engine, left, "choice", winner_id=winner)
        record_feedback(engine, right, "choice", winner_id=left)  # a second vote on the same pair: ignored
    status = experiment_status(engine, "arena-wins")
    rates = {r.variant: r for r in status.results}
    assert status.ties == 10 and rates["b"].exposures == 190 and rates["a"].conversions + rates["b"].conversions == 190
    assert rates["b"].rate > 0.7 and status.state == "winner" and status.winner == "b"
