"""The promotion gate: better versions pass, worse are refused, forcing is logged, every decision is kept."""

from __future__ import annotations

from conftest import SMALL_EVAL
from tweetforge.evaluation.promotion import gate, promote, promotion_log
from tweetforge.registry.versions import resolve


def test_promote_accepts_better_refuses_worse_and_logs_everything(trained, store):
    home, engine, _, _ = store
    weak, strong = trained
    first = promote(engine, home, strong.ref, max_copy_rate=1.0, settings=SMALL_EVAL, report_to="none")
    assert first.promoted and not first.forced and resolve(engine, "tiny-eval:champion").version == strong.version
    refused = promote(engine, home, weak.ref, max_copy_rate=1.0, settings=SMALL_EVAL, report_to="none")
    assert not refused.promoted and resolve(engine, "tiny-eval:champion").version == strong.version
    assert f"{refused.candidate_metrics['bits_per_char']:.4f}" in refused.reasons[0]
    assert f"{refused.champion_metrics['bits_per_char']:.4f}" in refused.reasons[0]
    forced = promote(engine, home, weak.ref, max_copy_rate=1.0, force=True, settings=SMALL_EVAL, report_to="none")
    assert forced.promoted and forced.forced and resolve(engine, "tiny-eval:champion").version == weak.version
    log = promotion_log(engine, "tiny-eval")
    assert [(r["from_version"], r["to_version"], r["promoted"], r["forced"]) for r in log] == [
        (None, strong.version, True, False), (strong.version, weak.version, False, False), (strong.version, weak.version, True, True)]
    assert all(r["who"] and r["candidate"]["bits_per_char"] for r in log)


def test_gate_margins():
    champion = {"bits_per_char": 2.0, "copy_rate": 0.0}
    assert gate({"bits_per_char": 2.019, "copy_rate": 0.01}, champion, 0.01, 0.01) == []
    reasons = gate({"bits_per_char": 2.03, "copy_rate": 0.02}, champion, 0.01, 0.01)
    assert "2.0300 vs champion 2.0000" in reasons[0] and "copy rate 2.0%" in reasons[1]
    assert gate({"bits_per_char": 9.0, "copy_rate": 0.0}, None, 0.01, 0.01) == []
