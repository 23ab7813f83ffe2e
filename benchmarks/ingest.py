#!/usr/bin/env python
"""Benchmark: import + clean + snapshot of N posts (default 1,000,000) with tweetforge, against a
baseline that applies the same cleaning rules row by row with pandas `apply` (the HuggingTweets way).

The input is the real CSVs of ../shared/data (read from there, never copied into the project),
repeated with new ids until they total N posts, about a third in each of their three formats:

  elonmusk_kaggle_2021.csv   Kaggle / twint 36 columns       new `id` (and `link`) per repetition
  elonmusk_cleaned.csv       `,tweet,day,nlikes,date,time`   no ids: the time is shifted by the
                                                             repetition index (seconds), so the
                                                             derived ids differ; new running index
  trump_archive.csv          Trump Twitter Archive           new `id` per repetition

Each side runs in its own subprocess, so its peak RSS (getrusage of that child) is its own:

  tweetforge  a fresh SQLite DB; `open_source` + `ingest` per file (what `tweetforge ingest` does),
              then `create_snapshot` over every author with the default CleaningRules.
  baseline    pandas `read_csv` of the same files, then per-row Python functions through
              `Series.apply`: retweet test, html.unescape + URL removal + whitespace collapse, the
              short-post test, the blake2b split; `drop_duplicates` per author; one Parquet file.

With a PostgreSQL database (--postgres URL, default $TWEETFORGE_TEST_POSTGRES_URL; skipped without one),
the same files are then imported into it three ways, each side in its own subprocess on emptied tables:

  postgres-copy    `ingest` per file, the staging rows written with COPY (the default on PostgreSQL)
  postgres-insert  the same with stage_with="insert": the multi-row INSERTs used before COPY
  postgres-pandas  the baseline's pandas `read_csv`, then `DataFrame.to_sql` into a plain table

Usage: .venv/bin/python benchmarks/ingest.py [--posts N] [--only tweetforge|baseline|postgres]
                                             [--postgres URL] [--profile]
Results and the profile: benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
WORK = ROOT / "benchmarks" / ".work"

# (original file, format, --author for formats without an author column)
FILES = (
    ("elonmusk_kaggle_2021.csv", "kaggle", None),
    ("elonmusk_cleaned.csv", "elon-cleaned", "elonmusk"),
    ("trump_archive.csv", "trump-archive", "realDonaldTrump"),
)
ID_BASE = {"kaggle": 1_600_000_000_000_000_000, "trump-archive": 1_700_000_000_000_000_000}
"""New ids look like X snowflake ids; one base per file keeps them unique across the two files."""

csv.field_size_limit(10_000_000)


# ----------------------------------------------------------------------------------------------------
# data generation (not timed)


def _read_original(name: str) -> tuple[list[str], list[list[str]]]:
    with (SHARED / name).open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], [r for r in rows[1:] if r]


def _generate_file(name: str, fmt: str, count: int, out: Path, progress) -> None:  # type: ignore[no-untyped-def]
    header, originals = _read_original(name)
    n = len(originals)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        if fmt == "kaggle":
            i_id, i_link = header.index("id"), header.index("link")
        for k in range(count):
            rep, row = divmod(k, n)
            row = list(originals[row])
            if fmt == "kaggle":
                new_id = str(ID_BASE[fmt] + k)
                row[i_link] = row[i_link].replace(row[i_id], new_id)
                row[i_id] = new_id
            elif fmt == "trump-archive":
                row[0] = str(ID_BASE[fmt] + k)
            else:  # elon-cleaned: no ids; shift the time so the derived id of each repetition differs
                row[0] = str(k)
                if rep:
                    moment = datetime.fromisoformat(f"{row[4]} {row[5]}") + timedelta(seconds=rep)
                    row[4], row[5] = moment.strftime("%Y-%m-%d"), moment.strftime("%H:%M:%S")
            writer.writerow(row)
            if k % 50_000 == 0:
                progress(k)
        progress(count)


def generate(total: int) -> Path:
    """The generated files for `total` posts, made once and kept in benchmarks/.work (gitignored)."""
    from rich.progress import Progress

    target = WORK / f"data-{total}"
    done = target / ".complete"
    if done.exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shares = [total // len(FILES)] * len(FILES)
    shares[0] += total - sum(shares)
    with Progress(transient=True) as bar:
        for (name, fmt, _), count in zip(FILES, shares):
            task = bar.add_task(f"generate {name}", total=count)
            _generate_file(name, fmt, count, target / name, lambda k, task=task: bar.update(task, completed=k))
    done.write_text(json.dumps({"posts": total, "shares": shares}) + "\n")
    return target


def _generated(data: Path) -> list[tuple[Path, str, str | None]]:
    return [(data / name, fmt, author) for name, fmt, author in FILES]


# ----------------------------------------------------------------------------------------------------
# tweetforge side


def run_tweetforge(data: Path, out: Path) -> dict:
    from tweetforge.data.ingest import ingest
    from tweetforge.data.snapshots import SnapshotRequest, create_snapshot
    from tweetforge.data.sources import ReadOptions, open_source
    from tweetforge.db.engine import engine_for

    started = time.perf_counter()
    engine = engine_for(f"sqlite:///{out / 'tweetforge.db'}")
    records = stored = repeated = 0
    steps = {}
    for path, fmt, author in _generated(data):
        t = time.perf_counter()
        result = ingest(engine, open_source(str(path), fmt, ReadOptions(author=author)))
        steps[f"ingest {path.name}"] = time.perf_counter() - t
        records += result.records
        stored += result.new
        repeated += result.repeated
    t = time.perf_counter()
    snapshot = create_snapshot(engine, out / "datasets", SnapshotRequest("bench"))
    steps["snapshot (read, clean, split, write)"] = time.perf_counter() - t
    seconds = time.perf_counter() - started
    splits = {s: sum(per_author.values()) for s, per_author in snapshot.counts["splits"].items()}
    return {
        "seconds": seconds,
        "steps": steps,
        "records": records,
        "stored": stored,
        "repeated_ids": repeated,
        "kept": snapshot.posts,
        "splits": splits,
        "per_author": {row["author"]: row["kept"] for row in snapshot.counts["cleaning"]},
        "parquet": str(snapshot.data_file),
    }


# ----------------------------------------------------------------------------------------------------
# baseline: pandas, one Python function per row through apply (the HuggingTweets way)

BASE_URL = re.compile(r"(?:https?://|www\.|pic\.twitter\.com/)\S+")  # the same pattern as clean.URL_PATTERN
BASE_SPACE = re.compile(r"\s+")


def base_is_retweet(text: str) -> bool:
    return text.startswith("RT @")


def base_clean_tweet(text: str) -> str:
    import html

    text = html.unescape(text)
    text = BASE_URL.sub(" ", text)
    return BASE_SPACE.sub(" ", text).strip()


def base_is_boring(text: str, min_words: int = 3) -> bool:
    """Fewer than `min_words` words that are not @mentions or #hashtags (URLs are already gone)."""
    return sum(1 for word in text.split() if word[0] not in "@#") < min_words


def base_split(key: str) -> str:
    import hashlib

    u = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64
    return "train" if u < 0.90 else "validation" if u < 0.95 else "test"


def read_frame(data: Path):  # type: ignore[no-untyped-def]
    """Every generated post as one pandas frame, dates parsed vectorized (the baseline's read_csv step)."""
    import pandas as pd

    frames = []
    for order, (path, fmt, author) in enumerate(_generated(data)):
        if fmt == "kaggle":
            df = pd.read_csv(
                path,
                dtype={"id": str, "timezone": str},
                usecols=["id", "date", "time", "timezone", "username", "tweet", "likes_count", "retweets_count", "retweet"],
            )
            tz = df["timezone"]  # "+0400": local time to UTC
            minutes = tz.str[0].map({"+": 1, "-": -1}) * (tz.str[1:3].astype(int) * 60 + tz.str[3:5].astype(int))
            offset = pd.to_timedelta(minutes, unit="m")
            frame = pd.DataFrame(
                {
                    "post_id": df["id"],
                    "author": df["username"],
                    "text": df["tweet"],
                    "created_at": pd.to_datetime(df["date"] + " " + df["time"]) - offset,
                    "retweet_flag": df["retweet"].astype(bool),
                    "likes": df["likes_count"],
                    "reposts": df["retweets_count"],
                }
            )
        elif fmt == "elon-cleaned":
            df = pd.read_csv(path, usecols=["tweet", "nlikes", "date", "time"], dtype={"date": str, "time": str})
            when = df["date"] + " " + df["time"]
            frame = pd.DataFrame(
                {
                    # the same id the importer derives for a file without ids: sha1 of author, time, text
                    "post_id": [derived(author, w, s) for w, s in zip(when, df["tweet"])],
                    "author": author,
                    "text": df["tweet"],
                    "created_at": pd.to_datetime(when),
                    "retweet_flag": False,
                    "likes": df["nlikes"],
                    "reposts": pd.NA,
                }
            )
        else:
            df = pd.read_csv(path, dtype={"id": str, "date": str}, keep_default_na=False)
            frame = pd.DataFrame(
                {
                    "post_id": df["id"],
                    "author": author,
                    "text": df["text"],
                    "created_at": pd.to_datetime(df["date"], format="%Y-%m-%d %H:%M:%S", errors="coerce"),
                    "retweet_flag": df["isRetweet"] == "t",
                    "likes": df["favorites"],
                    "reposts": df["retweets"],
                }
            )
        frame.insert(0, "network", "twitter")
        frame["import_order"] = order  # duplicates keep the copy imported first, as tweetforge does
        frames.append(frame)
    posts = pd.concat(frames, ignore_index=True)
    posts["text"] = posts["text"].fillna("")
    return posts


def run_baseline(data: Path, out: Path) -> dict:
    started = time.perf_counter()
    steps = {}
    t = time.perf_counter()
    posts = read_frame(data)
    records = len(posts)
    steps["read_csv"] = time.perf_counter() - t

    t = time.perf_counter()
    posts["is_retweet"] = posts["retweet_flag"] | posts["text"].apply(base_is_retweet)
    posts = posts[~posts["is_retweet"]].copy()
    posts["text"] = posts["text"].apply(base_clean_tweet)
    posts = posts[~posts["text"].apply(base_is_boring)]
    posts = posts.sort_values(["import_order", "created_at", "network", "post_id"], na_position="last", kind="stable")
    posts = posts.drop_duplicates(subset=["author", "text"], keep="first")
    posts["split"] = (posts["network"] + ":" + posts["post_id"]).apply(base_split)
    steps["clean + split (apply)"] = time.perf_counter() - t

    t = time.perf_counter()
    kept = posts[["network", "post_id", "author", "text", "created_at", "split", "likes", "reposts"]]
    target = out / "baseline.parquet"
    kept.to_parquet(target, compression="zstd", index=False)
    steps["write parquet"] = time.perf_counter() - t
    return {
        "seconds": time.perf_counter() - started,
        "steps": steps,
        "records": records,
        "kept": len(kept),
        "splits": {s: int(n) for s, n in kept["split"].value_counts().items()},
        "per_author": {a: int(n) for a, n in kept["author"].value_counts().items()},
        "parquet": str(target),
    }


def derived(author: str, when: str, text: str) -> str:
    import hashlib

    return "h" + hashlib.sha1(f"{author.lower()}\n{when}\n{text}".encode()).hexdigest()[:24]


# ----------------------------------------------------------------------------------------------------
# PostgreSQL: the same import through COPY, through the multi-row INSERTs, and pandas' to_sql

POSTGRES_URL_VARIABLE = "TWEETFORGE_BENCH_POSTGRES_URL"
"""How the driver hands the URL to its children: an environment variable keeps the password out of `ps`."""
PANDAS_TABLE = "bench_pandas_posts"
POSTGRES_SIDES = {"postgres-copy": "copy", "postgres-insert": "insert", "postgres-pandas": None}


def empty_postgres(url: str):  # type: ignore[no-untyped-def]
    """The store's tables dropped and made again (not timed), so every side starts from the same empty database."""
    from sqlalchemy import text

    from tweetforge.db.engine import create_store_engine
    from tweetforge.db.migrate import upgrade
    from tweetforge.db.schema import metadata

    engine = create_store_engine(url)
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        conn.execute(text(f"DROP TABLE IF EXISTS {PANDAS_TABLE}"))
    upgrade(engine)
    return engine


def run_postgres_tweetforge(data: Path, url: str, stage_with: str) -> dict:
    """`ingest` of each file (what `tweetforge ingest` does) into an empty PostgreSQL store, staging
    through COPY or through INSERTs; "staging" is the time inside stage(), which this side wraps."""
    import tweetforge.data.ingest as ingest_module
    from tweetforge.data.sources import ReadOptions, open_source
    from tweetforge.data.store import STAGE_WITH, stage

    engine = empty_postgres(url).execution_options(**{STAGE_WITH: stage_with})
    staging = 0.0

    def timed_stage(conn, batch) -> None:  # type: ignore[no-untyped-def]
        nonlocal staging
        t = time.perf_counter()
        stage(conn, batch)
        staging += time.perf_counter() - t

    ingest_module.stage = timed_stage
    started = time.perf_counter()
    records = stored = 0
    steps = {}
    for path, fmt, author in _generated(data):
        t = time.perf_counter()
        result = ingest_module.ingest(engine, open_source(str(path), fmt, ReadOptions(author=author)))
        steps[f"ingest {path.name}"] = time.perf_counter() - t
        records += result.records
        stored += result.new
    seconds = time.perf_counter() - started
    steps["of which staging"] = staging
    return {"seconds": seconds, "steps": steps, "records": records, "stored": stored, "write_s": staging}


def run_postgres_pandas(data: Path, url: str) -> dict:
    """The baseline's read_csv, then `DataFrame.to_sql` into a plain table: no key, no merge, no history."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    empty_postgres(url).dispose()
    started = time.perf_counter()
    posts = read_frame(data)
    steps = {"read_csv": time.perf_counter() - started}
    t = time.perf_counter()
    posts = posts.rename(columns={"retweet_flag": "is_retweet"})[
        ["network", "post_id", "author", "text", "created_at", "is_retweet", "likes", "reposts"]
    ]
    posts.to_sql(PANDAS_TABLE, engine, if_exists="replace", index=False)
    steps["to_sql"] = time.perf_counter() - t
    return {"seconds": time.perf_counter() - started, "steps": steps, "records": len(posts), "stored": len(posts), "write_s": steps["to_sql"]}


def postgres_version(url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SHOW server_version")).scalar()
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------------------------------
# driver


def child(side: str, data: Path, out: Path, profile: Path | None) -> None:
    if side in POSTGRES_SIDES:
        url, stage_with = os.environ[POSTGRES_URL_VARIABLE], POSTGRES_SIDES[side]

        def run(data: Path, _out: Path) -> dict:
            return run_postgres_pandas(data, url) if stage_with is None else run_postgres_tweetforge(data, url, stage_with)
    else:
        run = run_tweetforge if side == "tweetforge" else run_baseline
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(run, data, out)
        profiler.dump_stats(profile)
    else:
        result = run(data, out)
    print(json.dumps(result))


def run_side(side: str, data: Path, profile: bool, env: dict[str, str] | None = None) -> dict:
    """Run one side in a fresh interpreter; its peak RSS is that child's own getrusage."""
    out = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=WORK))
    try:
        command = [sys.executable, __file__, "--side", side, "--data", str(data), "--out", str(out)]
        if profile:
            command += ["--profile-to", str(WORK / f"{side}.prof")]
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        output = process.stdout.read()  # type: ignore[union-attr]
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            sys.exit(f"the {side} side failed (exit {process.returncode})")
        result = json.loads(output.strip().splitlines()[-1])
        result["wall_s"] = time.perf_counter() - started
        result["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
        return result
    finally:
        shutil.rmtree(out, ignore_errors=True)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} cores ({cpu}), {mem / 1024**2:.1f} GiB RAM, Python {platform.python_version()}"


def report_sqlite(console, args: argparse.Namespace, data: Path) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    results = {}
    for side in ("tweetforge", "baseline"):
        if args.only and side != args.only:
            continue
        with console.status(f"{side}: import + clean + snapshot of {args.posts:,} posts ..."):
            results[side] = run_side(side, data, args.profile)
        r = results[side]
        steps = ", ".join(f"{name} {s:.1f} s" for name, s in r["steps"].items())
        console.print(f"{side}: {r['seconds']:.1f} s ({steps})")

    table = Table(title=f"import + clean + snapshot of {args.posts:,} posts (seconds: the work, imports excluded)")
    for column in ("side", "seconds", "posts/s", "peak RSS", "process wall s", "posts kept", "train / valid. / test"):
        table.add_column(column, justify="left" if column == "side" else "right")
    for side, r in results.items():
        split = " / ".join(f"{r['splits'].get(s, 0):,}" for s in ("train", "validation", "test"))
        table.add_row(
            side,
            f"{r['seconds']:.1f}",
            f"{args.posts / r['seconds']:,.0f}",
            f"{r['peak_rss_mib']:,.0f} MiB",
            f"{r['wall_s']:.1f}",
            f"{r['kept']:,}",
            split,
        )
    console.print(table)

    if len(results) == 2:
        tf, base = results["tweetforge"], results["baseline"]
        ratio = base["seconds"] / tf["seconds"]
        verdict = "meets" if ratio >= 5 else "BELOW"
        console.print(f"ratio tweetforge / baseline (posts/s): [bold]{ratio:.2f}x[/bold] ({verdict} the 5x target)")
        console.print(f"peak memory: tweetforge {tf['peak_rss_mib']:,.0f} MiB, baseline {base['peak_rss_mib']:,.0f} MiB")
        if tf["kept"] == base["kept"] and tf["splits"] == base["splits"]:
            console.print(f"same posts kept on both sides: {tf['kept']:,}, with the same split counts")
        else:
            console.print(
                f"[yellow]posts kept differ: tweetforge {tf['kept']:,} {tf['splits']}, baseline {base['kept']:,} {base['splits']}[/yellow]"
            )
        note = f"tweetforge stores {tf['stored']:,} of {tf['records']:,} records"
        if tf["repeated_ids"]:
            note += (
                f"; {tf['repeated_ids']:,} repeat an id (the elon-cleaned rows with equal time and text) earlier in the same "
                "file with the same text and are not stored, the baseline drops them later as duplicate texts"
            )
        console.print(note + ". Most generated posts repeat an earlier text: both sides drop them as duplicates.")


def report_postgres(console, args: argparse.Namespace, data: Path, url: str) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table
    from sqlalchemy.engine import make_url

    shown = make_url(url).render_as_string(hide_password=True)
    console.print(f"PostgreSQL {postgres_version(url)} at {shown} (its tweetforge tables are dropped before each side)")
    results = {}
    for side in POSTGRES_SIDES:
        with console.status(f"{side}: import of {args.posts:,} posts into PostgreSQL ..."):
            results[side] = run_side(side, data, args.profile, env={POSTGRES_URL_VARIABLE: url})
        r = results[side]
        steps = ", ".join(f"{name} {s:.1f} s" for name, s in r["steps"].items())
        console.print(f"{side}: {r['seconds']:.1f} s ({steps})")

    table = Table(title=f"import of {args.posts:,} posts into PostgreSQL (seconds: the work, imports excluded)")
    for column in ("side", "seconds", "posts/s", "staging / to_sql s", "peak RSS", "rows stored"):
        table.add_column(column, justify="left" if column == "side" else "right")
    for side, r in results.items():
        table.add_row(
            side,
            f"{r['seconds']:.1f}",
            f"{args.posts / r['seconds']:,.0f}",
            f"{r['write_s']:.1f}",
            f"{r['peak_rss_mib']:,.0f} MiB",
            f"{r['stored']:,}",
        )
    console.print(table)
    copy, insert, pandas = (results[side]["seconds"] for side in POSTGRES_SIDES)
    console.print(
        f"ratios (posts/s): COPY / INSERT [bold]{insert / copy:.2f}x[/bold], COPY / pandas [bold]{pandas / copy:.2f}x[/bold], "
        f"INSERT / pandas {pandas / insert:.2f}x; staging alone: COPY / INSERT "
        f"{results['postgres-insert']['write_s'] / results['postgres-copy']['write_s']:.2f}x"
    )
    if results["postgres-copy"]["stored"] != results["postgres-insert"]["stored"]:
        console.print("[yellow]COPY and INSERT stored different numbers of posts[/yellow]")
    console.print(
        "tweetforge merges into the keyed store (idempotent, edit history, one transaction per file) and skips ids "
        "repeated in a file; pandas appends every row to a plain table"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1_000_000, help="posts to generate and import (default 1,000,000)")
    parser.add_argument("--profile", action="store_true", help="also write cProfile stats of each side to benchmarks/.work")
    parser.add_argument("--only", choices=("tweetforge", "baseline", "postgres"), help="run one side (or the PostgreSQL section) only")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=os.environ.get("TWEETFORGE_TEST_POSTGRES_URL"),
        help="a scratch PostgreSQL database for the PostgreSQL section: its tweetforge tables are dropped "
        "(default: $TWEETFORGE_TEST_POSTGRES_URL; without either the section is skipped)",
    )
    parser.add_argument("--side", choices=("tweetforge", "baseline", *POSTGRES_SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args.side, args.data, args.out, args.profile_to)
        return

    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=120)
    missing = [name for name, _, _ in FILES if not (SHARED / name).exists()]
    if missing:
        sys.exit(f"missing input data in {SHARED}: {', '.join(missing)}")
    if args.posts < len(FILES):
        sys.exit(f"--posts must be at least {len(FILES)}")
    if args.only == "postgres" and not args.postgres:
        sys.exit("--only postgres needs --postgres URL (or TWEETFORGE_TEST_POSTGRES_URL)")
    WORK.mkdir(parents=True, exist_ok=True)
    console.print(f"machine: {machine()}")
    with console.status(f"generating {args.posts:,} posts from {SHARED} ..."):
        data = generate(args.posts)
    console.print(f"data: {data} ({sum(p.stat().st_size for p in data.glob('*.csv')) / 2**20:,.0f} MiB of CSV)")

    if args.only != "postgres":
        report_sqlite(console, args, data)
    if args.only in (None, "postgres"):
        if args.postgres:
            report_postgres(console, args, data, args.postgres)
        else:
            console.print("PostgreSQL section skipped: pass --postgres URL (a scratch database) or set TWEETFORGE_TEST_POSTGRES_URL")


if __name__ == "__main__":
    main()
