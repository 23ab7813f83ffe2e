"""The README's tour, end to end: once through the installed command in a subprocess, the rest in-process."""

from __future__ import annotations

import json

from conftest import run_cli, shared


def tour(home, *args, check=True):
    return run_cli(home, *args, check=check, in_subprocess=True)


STATS_KEYS = {"author", "downloaded", "retweets", "replies", "short", "duplicates", "kept"}


def test_ingest_stats_dataset_tour(tmp_path):
    home = tmp_path / ".tweetforge"
    out = tour(home, "ingest", str(shared("elonmusk_kaggle_2021.csv")), "--format", "kaggle")
    assert "3,115 new" in out.stdout
    out = tour(home, "ingest", str(shared("elonmusk_kaggle_2021.csv")), "--json")
    assert json.loads(out.stdout)["new"] == 0
    tour(home, "ingest", str(shared("elonmusk_cleaned.csv")), "--author", "elonmusk")

    rows = json.loads(tour(home, "stats", "--json", "--author", "elonmusk").stdout)
    assert [r["author"] for r in rows] == ["elonmusk"]
    assert STATS_KEYS <= set(rows[0])
    table = tour(home, "stats", "--author", "elonmusk", "--plot", str(tmp_path / "stats.png")).stdout
    assert "@elonmusk" in table and f"{rows[0]['kept']:,}" in table
    assert (tmp_path / "stats.png").stat().st_size > 10_000

    out = tour(home, "dataset", "create", "elon-v1", "--author", "elonmusk", "--drop-replies", "--since", "2019-01-01")
    assert "dataset elon-v1" in out.stdout
    listed = json.loads(tour(home, "dataset", "list", "--json").stdout)
    assert [d["name"] for d in listed] == ["elon-v1"]
    shown = json.loads(tour(home, "dataset", "show", "elon-v1", "--json").stdout)
    assert shown["filters"]["since"] == "2019-01-01" and shown["filters"]["rules"]["drop_replies"] is True
    assert sum(shown["counts"]["splits"]["train"].values()) > 1000

    again = tour(home, "dataset", "create", "elon-v1", check=False)
    assert again.returncode == 1 and "immutable" in again.stderr
    missing = tour(home, "dataset", "show", "elon-v9", check=False)
    assert missing.returncode == 1 and "datasets: elon-v1" in missing.stderr

    imports = json.loads(tour(home, "ingest", "list", "--json").stdout)
    assert [i["new"] for i in imports] == [3115, 0, 15346]


def test_example_and_optout(tmp_path):
    home = tmp_path / ".tweetforge"
    run_cli(home, "optout", "add", "realDonaldTrump")
    refused = run_cli(home, "ingest", "example:trump", check=False)
    assert refused.returncode == 1 and "opted-out" in refused.stderr
    run_cli(home, "optout", "remove", "realDonaldTrump")
    out = run_cli(home, "ingest", "example:trump", "--json")
    assert json.loads(out.stdout)["new"] == 20761
