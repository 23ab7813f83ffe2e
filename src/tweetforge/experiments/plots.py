"""An experiment's rates with intervals at every look, and its always-valid p-value."""

from __future__ import annotations

from pathlib import Path

from tweetforge.plotting import pyplot, save


def plot_experiment(status, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Each variant's cumulative rate with its 95% Wilson interval at every look, and the always-valid
    p-value against alpha below."""
    plt = pyplot()

    from tweetforge.experiments.statistics import wilson_interval

    timeline, experiment = status.timeline, status.experiment
    fig, (rates, p_values) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    looks = list(range(1, len(timeline["looks"]) + 1))
    for result in status.results:
        n, k = timeline["exposures"][result.variant], timeline["conversions"][result.variant]
        rate = [c / e if e else float("nan") for c, e in zip(k, n)]
        bands = [wilson_interval(c, e) for c, e in zip(k, n)]
        line, = rates.plot(looks, rate, marker=".", label=f"{result.variant} ({result.model}): {result.conversions}/{result.exposures}")
        rates.fill_between(looks, [b[0] for b in bands], [b[1] for b in bands], color=line.get_color(), alpha=0.15)
    what = "win rate" if experiment.metric == "arena" else f"{experiment.metric} rate"
    rates.set_ylabel(f"{what} (95% Wilson interval)")
    rates.set_title(f"experiment {experiment.name}: {status.state}" + (f", winner {status.winner}" if status.winner else ""))
    rates.legend(fontsize=8)
    rates.grid(alpha=0.3)
    if timeline.get("p_values"):
        p_values.plot(looks, timeline["p_values"], color="black", marker=".")
    p_values.axhline(experiment.alpha, color="red", ls=":", label=f"alpha {experiment.alpha:g}")
    p_values.set_yscale("log")
    p_values.set_ylabel("always-valid p")
    p_values.set_xlabel(f"look (every {'comparison' if experiment.metric == 'arena' else 'exposure'} batch of 100, and now)")
    p_values.legend(fontsize=8)
    p_values.grid(alpha=0.3)
    return save(fig, path)
