"""Models side by side on one test split: a bar chart per metric and the length histograms."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tweetforge.evaluation.report import COMPARED_METRICS, METRICS
from tweetforge.plotting import pyplot, save

if TYPE_CHECKING:
    from tweetforge.evaluation.evaluate import Evaluation

def plot_comparison(evaluations: list[Evaluation], real_texts: list[str], path: Path) -> Path:
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
    for ax, key in zip(axes, COMPARED_METRICS):
        metric = METRICS[key]
        scale, title = (100, f"{metric.title} (%)") if metric.percent else (1, metric.title)
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
