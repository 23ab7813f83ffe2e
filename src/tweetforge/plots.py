"""Plots a person would rather look at than a table. matplotlib is imported lazily (it is slow to load)."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def plot_data_stats(cleaned: pl.DataFrame, path: Path) -> Path:
    """Per author: kept posts per month, and the length distribution of kept posts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training_curve(history: list[dict], path: Path) -> Path:
    """Training and validation loss against step, from a run's evaluation history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
