"""Plots a person would rather look at than a table. matplotlib is imported lazily (it is slow to load)."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib.pyplot on the file-only backend (no display here, and none needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Lay out, write as PNG (creating the folder) and free the figure."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def plot_data_stats(cleaned: pl.DataFrame, path: Path) -> Path:
    """Per author: kept posts per month, and the length distribution of kept posts."""
    plt = pyplot()

    kept = cleaned.filter(pl.col("drop_reason").is_null())
    authors = kept.group_by("author").len().sort("len", descending=True)["author"].to_list()[:8]
    fig, (monthly, lengths) = plt.subplots(1, 2, figsize=(13, 4.5))
    for author in authors:
        mine = kept.filter(pl.col("author") == author)
        per_month = (
            mine.drop_nulls("created_at")
            .group_by(pl.col("created_at").dt.truncate("1mo").alias("month"))
            .len()
            .sort("month")
        )
        monthly.plot(per_month["month"].to_list(), per_month["len"].to_list(), label=f"@{author}", lw=1.2)
        lengths.hist(mine["text"].str.len_chars().to_list(), bins=40, range=(0, 300), alpha=0.5, label=f"@{author}")
    monthly.set_title("kept posts per month")
    monthly.set_ylabel("posts")
    lengths.set_title("length of kept posts (characters, after cleaning)")
    lengths.set_xlabel("characters")
    lengths.set_ylabel("posts")
    for ax in (monthly, lengths):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return save(fig, path)


def plot_training_curve(history: list[dict], path: Path) -> Path:
    """Training and validation loss against step, from a run's evaluation history."""
    plt = pyplot()

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [h["train_loss"] for h in history], marker=".", label="training loss (batch)")
    ax.plot(steps, [h["val_loss"] for h in history], marker="o", label="validation loss")
    best = min(history, key=lambda h: h["val_loss"])
    ax.axvline(best["step"], color="grey", ls=":", lw=1, label=f"best: step {best['step']}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("training curve")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


COMPARED_METRICS = (
    ("bits_per_char", "bits per character ↓", 1),
    ("distinct_2", "distinct-2 ↑", 1),
    ("self_bleu", "self-BLEU ↓", 1),
    ("length_chars_wasserstein", "length distance, characters ↓", 1),
    ("ended_share", "ends properly ↑ (%)", 100),
    ("copy_rate", "copies training posts ↓ (%)", 100),
    ("detectability", "detectability (0.5 best)", 1),
)


def plot_comparison(evaluations: list, real_texts: list[str], path: Path) -> Path:
    """One bar chart per metric (a bar per model), and the length histogram of each model's generated
    posts against the real test posts."""
    plt = pyplot()

    labels = [e.subject for e in evaluations]
    colors = [plt.cm.tab10(i % 10) for i in range(len(labels))]
    panels = len(COMPARED_METRICS) + 1
    columns = 4
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows))
    axes = axes.ravel()
    for ax, (key, title, scale) in zip(axes, COMPARED_METRICS):
        values = [e.metrics.get(key) for e in evaluations]
        heights = [v * scale if v is not None else 0 for v in values]
        bars = ax.bar(range(len(labels)), heights, color=colors)
        for bar, value in zip(bars, values):
            ax.annotate("n/a" if value is None else f"{value * scale:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        if key == "detectability":
            ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    lengths = axes[len(COMPARED_METRICS)]
    bins = list(range(0, 300, 20))
    lengths.hist([len(t) for t in real_texts], bins=bins, histtype="stepfilled", color="lightgrey", label="real test posts", density=True)
    for evaluation, color in zip(evaluations, colors):
        lengths.hist([len(s["text"]) for s in evaluation.samples], bins=bins, histtype="step", lw=1.5, color=color,
                     label=evaluation.subject, density=True)
    lengths.set_title("length of posts (characters)", fontsize=10)
    lengths.legend(fontsize=7)
    for ax in axes[panels:]:
        ax.axis("off")
    dataset = evaluations[0].dataset
    fig.suptitle(f"test split of {dataset}: {evaluations[0].metrics['test_posts']:,} real posts, "
                 f"{evaluations[0].metrics['samples']:,} generated per model", fontsize=11)
    return save(fig, path)


def plot_experiment(status, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Each variant's cumulative rate with its 95% Wilson interval at every look, and the always-valid
    p-value against alpha below."""
    plt = pyplot()

    from tweetforge.ab_stats import wilson_interval

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
