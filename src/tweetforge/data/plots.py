"""The data plot: kept posts per month and their lengths, per author."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl

from tweetforge.plotting import pyplot, save

PLOTTED_YEARS = (datetime(1970, 1, 1), datetime(2100, 1, 1))
"""Post times an import accepts; older stores (or edited ones) may hold others, which the month axis leaves out."""


def plot_data_stats(cleaned: pl.DataFrame, path: Path) -> Path:
    """Per author: kept posts per month, and the length distribution of kept posts."""
    plt = pyplot()

    kept = cleaned.filter(pl.col("drop_reason").is_null())
    dated = pl.col("created_at").is_between(*PLOTTED_YEARS, closed="left")
    undated = kept.filter(pl.col("created_at").is_not_null() & ~dated).height
    authors = kept.group_by("author").len().sort("len", descending=True)["author"].to_list()[:8]
    fig, (monthly, lengths) = plt.subplots(1, 2, figsize=(13, 4.5))
    for author in authors:
        mine = kept.filter(pl.col("author") == author)
        per_month = (
            mine.filter(dated)
            .group_by(pl.col("created_at").dt.truncate("1mo").alias("month"))
            .len()
            .sort("month")
        )
        monthly.plot(per_month["month"].to_list(), per_month["len"].to_list(), label=f"@{author}", lw=1.2)
        lengths.hist(mine["text"].str.len_chars().to_list(), bins=40, range=(0, 300), alpha=0.5, label=f"@{author}")
    monthly.set_title("kept posts per month" + (f" ({undated:,} with dates before 1970 or after 2099 left out)" if undated else ""))
    monthly.set_ylabel("posts")
    lengths.set_title("length of kept posts (characters, after cleaning)")
    lengths.set_xlabel("characters")
    lengths.set_ylabel("posts")
    for ax in (monthly, lengths):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return save(fig, path)
