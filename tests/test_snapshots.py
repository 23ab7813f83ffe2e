"""Dataset snapshots: frozen splits, immutability, the minimum-data guard, balancing, and files any
Parquet reader opens."""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from conftest import archive_tweet, make_archive, shared
from tweetforge.data.clean import CleaningRules
from tweetforge.data.ingest import ingest
from tweetforge.data.snapshots import (
    DatasetError,
    SnapshotRequest,
    create_snapshot,
    list_snapshots,
    read_snapshot,
    split_of,
)
from tweetforge.data.sources import ReadOptions, open_source


def load(engine, name, **options):
    return ingest(engine, open_source(str(shared(name)), None, ReadOptions(**options)))


def test_split_is_frozen_when_posts_are_added(engine, tmp_path):
    load(engine, "elonmusk_kaggle_2021.csv")
    v1 = create_snapshot(engine, tmp_path / "ds", SnapshotRequest("elon-v1", ("elonmusk",)))
    load(engine, "elonmusk_cleaned.csv", author="elonmusk")
    v2 = create_snapshot(engine, tmp_path / "ds", SnapshotRequest("elon-v2", ("elonmusk",)))
    first, second = read_snapshot(v1), read_snapshot(v2)
    assert second.height > first.height * 3
    joined = first.join(second, on=["network", "post_id"], suffix="_v2")
    assert joined.height == first.height  # no post of v1 lost (kaggle posts are the earliest copies)
    assert (joined["split"] == joined["split_v2"]).all()
    assert set(first.filter(pl.col("split") == "test")["post_id"]) <= set(second.filter(pl.col("split") == "test")["post_id"])
    shares = second["split"].value_counts(normalize=True).sort("split")
    assert dict(zip(shares["split"], shares["proportion"])) == pytest.approx({"test": 0.05, "train": 0.90, "validation": 0.05}, abs=0.01)
    for network, post_id, split in first.select("network", "post_id", "split").head(50).iter_rows():
        assert split_of(network, post_id) == split


def test_snapshot_is_immutable_hashed_and_readable_without_tweetforge(engine, tmp_path):
    load(engine, "trump_archive.csv", author="realDonaldTrump")
    snap = create_snapshot(engine, tmp_path / "ds", SnapshotRequest("trump-v1"))
    with pytest.raises(DatasetError, match="'trump-v1' exists and snapshots are immutable"):
        create_snapshot(engine, tmp_path / "ds", SnapshotRequest("trump-v1"))
    again = create_snapshot(engine, tmp_path / "ds", SnapshotRequest("trump-v1-again"))
    assert again.content_hash == snap.content_hash
    other = create_snapshot(engine, tmp_path / "ds", SnapshotRequest("trump-no-replies", rules=CleaningRules(drop_replies=True)))
    assert other.content_hash != snap.content_hash
    data = snap.path / "data.parquet"
    assert pq.read_table(data).num_rows == snap.posts
    assert duckdb.sql(f"SELECT count(*) FROM '{data}' WHERE split = 'test'").fetchall()[0][0] == sum(snap.counts["splits"]["test"].values())
    assert "&amp;" not in " ".join(pl.read_parquet(data)["text"].to_list())
    dropped = pl.read_parquet(snap.path / "dropped.parquet")
    assert set(dropped["drop_reason"].unique()) <= {"retweet", "short", "duplicate"}
    assert dropped.height + snap.posts == 4576
    assert [s.name for s in list_snapshots(engine)] == ["trump-v1", "trump-v1-again", "trump-no-replies"]
    assert not list((tmp_path / "ds").glob(".tmp-*"))


def test_minimum_data_guard(engine, tmp_path):
    tweets = [archive_tweet(str(i), f"Post number {i} says something about rockets and cars") for i in range(120)]
    make_archive(tmp_path / "small.zip", "tiny", [[archive_tweet(str(10**6 + i), f"Tiny post {i} says something") for i in range(20)]])
    make_archive(tmp_path / "medium.zip", "medium", [tweets])
    ingest(engine, open_source(str(tmp_path / "small.zip")))
    ingest(engine, open_source(str(tmp_path / "medium.zip")))
    with pytest.raises(DatasetError, match=r"@tiny has \d+ characters left after cleaning \(20 of 20 posts\); at least 6,000"):
        create_snapshot(engine, tmp_path / "ds", SnapshotRequest("tiny-v1", ("tiny",)))
    snap = create_snapshot(engine, tmp_path / "ds", SnapshotRequest("medium-v1", ("medium",)))
    assert snap.warnings and "fewer than 40,000" in snap.warnings[0]
    with pytest.raises(DatasetError, match="no stored posts of nobody"):
        create_snapshot(engine, tmp_path / "ds", SnapshotRequest("x", ("medium", "nobody")))


def test_balance_oversamples_the_smaller_author_in_train_only(engine, tmp_path):
    load(engine, "trump_archive.csv", author="realDonaldTrump")
    load(engine, "elonmusk_kaggle_2021.csv")
    snap = create_snapshot(engine, tmp_path / "ds", SnapshotRequest("cyborg", balance=True))
    data = read_snapshot(snap)
    train = data.filter(pl.col("split") == "train")
    chars = dict(train.group_by("author").agg(pl.col("text").str.len_chars().sum()).iter_rows())
    assert chars["elonmusk"] == pytest.approx(chars["realDonaldTrump"], rel=0.02)
    assert data.filter(pl.col("split") != "train")["copy"].max() == 0
    assert snap.counts["oversampled"] == int((data["copy"] > 0).sum()) > 0


def test_since_filter(engine, tmp_path):
    load(engine, "trump_archive.csv", author="realDonaldTrump")
    snap = create_snapshot(engine, tmp_path / "ds", SnapshotRequest("recent", since=date(2019, 1, 1)))
    assert read_snapshot(snap)["created_at"].min().year == 2019
