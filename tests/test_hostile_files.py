"""Hostile files (issue 17): a ZIP bomb, unsafe entry names, symbolic links, FIFOs and devices, trailing
JavaScript, a 200 MB line, NUL bytes, UTF-16, 20,000 columns, absurd dates and ids, deep JSON, huge numbers,
a folder of 10,000 files. Each is refused with one line naming the file (and the line or entry), the store
unchanged, in a subprocess whose peak memory is measured and that is killed if it hangs. The inputs are built
on the fly; a real X archive of 100,000 tweets still imports under the default limits."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import STORE_TABLES, archive_tweet, make_archive, table_dump, ytd
from tweetforge.data.ingest import ingest
from tweetforge.data.sources import ReadOptions, open_source
from tweetforge.db.engine import engine_for

PEAK_MB = 500
"""The bound the README states for the memory of an import, whatever the file."""

HANG_S = 60
"""A command still running after this long hangs: it is killed and the test fails."""

_MEASURED = """
import atexit, os, resource, sys
# a regression must fail the test, not take the machine's memory from everyone else
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

def peak_kb():
    # VmHWM is this process's own high-water mark; ru_maxrss would include the forking test process's
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

atexit.register(lambda: open(os.environ["PEAK_RSS_FILE"], "w").write(str(peak_kb())))
from tweetforge.cli import app
app(prog_name="tweetforge")
"""
"""`tweetforge ARGS` reporting its own peak resident memory (KB) when it exits."""


def run_measured(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """The command's result and its peak memory in MB."""
    peak_file = home.parent / "peak-rss"
    variables = {**os.environ, "TWEETFORGE_HOME": str(home), "COLUMNS": "200", "PEAK_RSS_FILE": str(peak_file), **(env or {})}
    variables.pop("TWEETFORGE_DATABASE_URL", None)
    process = subprocess.Popen([sys.executable, "-c", _MEASURED, *args], cwd=home.parent, env=variables, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"tweetforge {' '.join(args)} still ran after {HANG_S} s: it hangs")
    result = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
    assert peak_file.exists(), f"the command died without exiting ({process.returncode}):\n{stderr}"
    peak_mb = int(peak_file.read_text()) / 1024
    peak_file.unlink()
    print(f"peak {peak_mb:.0f} MB: tweetforge {' '.join(a[:60] for a in args)}")
    return result, peak_mb


@pytest.fixture(scope="module")
def populated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("populated") / ".tweetforge"
    archive = make_archive(home.parent / "ann.zip", "ann", [[archive_tweet(str(i), f"an ordinary post, number {i}") for i in range(1, 40)]])
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    ingest(engine, open_source(str(archive), None, ReadOptions()))
    engine.dispose()
    return home


class Store:
    """A copy of the populated home, and what its tables held before the command."""

    def __init__(self, populated: Path, tmp_path: Path):
        self.home = tmp_path / ".tweetforge"
        shutil.copytree(populated, self.home)
        self.engine = engine_for(f"sqlite:///{self.home / 'tweetforge.db'}")
        self.before = table_dump(self.engine, *STORE_TABLES)

    def refuses(self, expected: str, *args: str, env: dict[str, str] | None = None) -> float:
        """Runs `tweetforge ingest ARGS`: exit 1, one line matching `expected`, no traceback, the store unchanged.
        Returns the peak memory in MB."""
        result, peak_mb = run_measured(self.home, "ingest", *args, env=env)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("Error: ")
        assert re.search(expected, lines[0]), lines[0]
        assert table_dump(self.engine, *STORE_TABLES) == self.before
        assert peak_mb <= PEAK_MB
        return peak_mb

    def imports(self, *args: str, env: dict[str, str] | None = None) -> dict:
        result, peak_mb = run_measured(self.home, "ingest", *args, "--json", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert peak_mb <= PEAK_MB
        return json.loads(result.stdout)


@pytest.fixture
def store(populated_home, tmp_path):
    store = Store(populated_home, tmp_path)
    yield store
    store.engine.dispose()


def write_zip_entry(archive: zipfile.ZipFile, name: str, head: bytes, filler: bytes, size: int) -> None:
    """An entry of `size` bytes streamed in 16 MB chunks (nothing that size is ever held in memory)."""
    with archive.open(name, "w", force_zip64=size > zipfile.ZIP64_LIMIT) as entry:
        entry.write(head)
        chunk = filler * ((16 << 20) // len(filler))
        left = size - len(head)
        while left > 0:
            entry.write(chunk[:left])
            left -= len(chunk)


ACCOUNT_JS = ytd("account", [{"account": {"username": "ann", "accountId": "1"}}])


def zip_bomb(path: Path, size: int) -> Path:
    """data/tweets.js is the assignment, then spaces: 2 GB compress to 9 MB (level 1: built in 3 s)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("data/account.js", ACCOUNT_JS)
        write_zip_entry(archive, "data/tweets.js", b"window.YTD.tweets.part0 = [", b" ", size)
    assert path.stat().st_size < size / 200
    return path


def test_zip_bomb_is_refused_from_its_header(store, tmp_path):
    path = zip_bomb(tmp_path / "twitter-bomb.zip", 2 << 30)
    store.refuses(r"twitter-bomb\.zip:data/tweets\.js: expands from [\d,]+ to 2,147,483,648 bytes or more .* a ZIP bomb", str(path))


def test_zip_bomb_streamed_when_the_ratio_is_allowed(store, tmp_path):
    # with the ratio check turned off, its spaces are read through a chunk at a time, in bounded memory
    path = zip_bomb(tmp_path / "twitter-bomb.zip", 256 << 20)
    store.refuses(r"twitter-bomb\.zip:data/tweets\.js, line 1: truncated JSON", str(path), env={"TWEETFORGE_IMPORT_MAX_ZIP_RATIO": "100000"})


def lying_header_zip(path: Path) -> Path:
    """A 64 MB entry of spaces whose central directory says it is 1,000 bytes long."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/account.js", ACCOUNT_JS)
        write_zip_entry(archive, "data/tweets.js", b"window.YTD.tweets.part0 = [", b" ", 64 << 20)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"PK\x01\x02")
    while raw[at + 46 : at + 46 + int.from_bytes(raw[at + 28 : at + 30], "little")] != b"data/tweets.js":
        at = raw.index(b"PK\x01\x02", at + 46)
    raw[at + 24 : at + 28] = (1000).to_bytes(4, "little")  # the uncompressed size
    path.write_bytes(raw)
    return path


def test_zip_entry_whose_header_lies_about_its_size(store, tmp_path):
    path = lying_header_zip(tmp_path / "liar.zip")
    store.refuses(r"liar\.zip:data/tweets\.js: damaged ZIP entry: Bad CRC-32", str(path))


UNSAFE_NAMES = ["../../outside/data/tweets.js", "/etc/twitter/data/tweets.js", "data/../../../tweets.js", "C:/Users/x/data/tweets.js"]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_zip_entry_with_an_unsafe_name(store, tmp_path, name):
    path = make_archive(tmp_path / "unsafe.zip", "ann", [[archive_tweet("900", "a post in an unsafe archive")]])
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(name, ytd("tweets", []))
    store.refuses(rf"unsafe\.zip:{re.escape(name)}: entry name is absolute or climbs out with '\.\.'", str(path))


def folder_export(root: Path) -> Path:
    return make_archive(root, "ann", [[archive_tweet("901", "a post of a folder export")]], as_zip=False)


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


TWEETS_JS_REPLACEMENTS = {
    "link_to_dev_zero": (lambda tweets_js, tmp: tweets_js.symlink_to("/dev/zero"), r"is a symbolic link"),
    "link_to_fifo": (lambda tweets_js, tmp: tweets_js.symlink_to(fifo(tmp / "pipe")), r"is a symbolic link"),
    "link_to_a_file_outside": (lambda tweets_js, tmp: tweets_js.symlink_to(make_archive(tmp / "other", "bob", [[]], as_zip=False)
                                                                              / "data" / "tweets.js"), r"is a symbolic link"),
    "fifo": (lambda tweets_js, tmp: fifo(tweets_js), r"is a FIFO \(named pipe\), not a regular file"),
}


@pytest.mark.parametrize("case", TWEETS_JS_REPLACEMENTS)
def test_folder_export_whose_tweets_js_is_not_a_regular_file(store, tmp_path, case):
    replace, expected = TWEETS_JS_REPLACEMENTS[case]
    folder = folder_export(tmp_path / "export")
    tweets_js = folder / "data" / "tweets.js"
    tweets_js.unlink()
    replace(tweets_js, tmp_path)
    store.refuses(rf"export/data/tweets\.js: {expected}", str(folder))


def test_folder_export_with_a_fifo_beside_the_files_read_imports(store, tmp_path):
    folder = folder_export(tmp_path / "export")
    fifo(folder / "data" / "like.js")
    fifo(folder / "data" / "tweets_media")
    assert store.imports(str(folder))["new"] == 1


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "/dev/null"])
def test_fifo_or_device_as_the_path(store, tmp_path, kind):
    path = str(fifo(tmp_path / "posts.csv")) if kind == "fifo" else kind
    what = r"a FIFO \(named pipe\)" if kind == "fifo" else "a character device"
    store.refuses(rf"{re.escape(path)}: is {what}, not a regular file", path)


def test_folder_of_ten_thousand_files(store, tmp_path):
    data = tmp_path / "downloads" / "data"
    data.mkdir(parents=True)
    for n in range(10_000):
        (data / f"photo-{n}.js").write_bytes(b"")
    store.refuses(r"downloads: no data/tweets\.js in this archive", str(data.parent))
    store.refuses(r"downloads/data: holds more than 1,000 files \(limit TWEETFORGE_IMPORT_MAX_ARCHIVE_FILES\)", str(data.parent),
                  env={"TWEETFORGE_IMPORT_MAX_ARCHIVE_FILES": "1000"})
    photos = tmp_path / "photos"
    photos.mkdir()
    for n in range(3):
        (photos / f"{n}.jpg").write_bytes(b"")
    store.refuses(r"photos: no data/ folder: a folder is read as an X archive", str(photos))


def test_zip_with_more_entries_than_the_limit(store, tmp_path):
    path = make_archive(tmp_path / "many.zip", "ann", [[archive_tweet("902", "a post beside many photos")]])
    with zipfile.ZipFile(path, "a") as archive:
        for n in range(2_000):
            archive.writestr(f"data/tweets_media/{n}.jpg", b"")
    store.refuses(r"many\.zip: ZIP has 2,002 entries .*limit 1,000 entries", str(path), env={"TWEETFORGE_IMPORT_MAX_ARCHIVE_FILES": "1000"})


TRAILING_ACCEPTED = ["", ";", ";\n", "\n;\n\n", "  ;  "]
TRAILING_REFUSED = ["\nalert(1);", ";\nwindow.YTD.tweets.part1 = [];", "]", ";;"]


@pytest.mark.parametrize("trailing", TRAILING_ACCEPTED, ids=repr)
def test_tweets_js_ending_in_a_semicolon_imports(store, tmp_path, trailing):
    (tmp_path / "tweets.js").write_text(ytd("tweets", [archive_tweet("903", "a post before a semicolon")]) + trailing)
    assert store.imports("tweets.js", "--author", "ann")["new"] == 1


@pytest.mark.parametrize("trailing", TRAILING_REFUSED, ids=repr)
def test_trailing_javascript_after_the_array(store, tmp_path, trailing):
    (tmp_path / "tweets.js").write_text(ytd("tweets", [archive_tweet("904", "a post before some script")]) + trailing)
    store.refuses(r"tweets\.js, line \d+: unexpected text after the array of posts", "tweets.js", "--author", "ann")


def write_long_line(path: Path, head: bytes, size: int, tail: bytes = b"") -> Path:
    with path.open("wb") as f:
        f.write(head)
        chunk = b"x" * (16 << 20)
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(tail)
    return path


LONG_LINES = {
    "csv": (b"id,text,author\n1,", b",ann\n", r"long\.csv, line 2: line is longer than 1,000,000 bytes"),
    "jsonl": (b'{"id_str": "1", "user": {"screen_name": "ann"}, "full_text": "', b'"}\n', r"long\.jsonl, line 1: line is longer"),
    "js": (b'window.YTD.tweets.part0 = [\n{"tweet": {"id_str": "1", "full_text": "', b'"}}]',
           r"long/tweets\.js, line 2: record 1 is larger than 1,000,000 characters"),
}


@pytest.mark.parametrize("kind", LONG_LINES)
def test_a_200_megabyte_line(store, tmp_path, kind):
    head, tail, expected = LONG_LINES[kind]
    name = "long/tweets.js" if kind == "js" else f"long.{kind}"
    (tmp_path / "long").mkdir()
    write_long_line(tmp_path / name, head, 200 << 20, tail)
    store.refuses(expected, name, "--author", "ann")


def test_nul_bytes(store, tmp_path):
    fine = b'{"id_str": "1", "full_text": "fine", "user": {"screen_name": "ann"}}\n'
    (tmp_path / "nul.jsonl").write_bytes(fine + b'{"id_str": "2",\x00 "full_text": "x"}\n')
    store.refuses(r"nul\.jsonl, line 2: contains a NUL byte", "nul.jsonl")
    (tmp_path / "tweets.js").write_bytes(ytd("tweets", [archive_tweet("905", "before\x00after")]).replace("\\u0000", "\x00").encode())
    store.refuses(r"tweets\.js, line 7: contains a NUL byte", "tweets.js", "--author", "ann")


UTF16_CSV = "id,text,author\n906,un café très bon ce matin,ann\n907,日本語の投稿です,ann\n"


@pytest.mark.parametrize("encoding, args", [("utf-16", []), ("utf-16", ["--encoding", "utf-16"]), ("utf-16-le", ["--encoding", "utf-16-le"]),
                                            ("utf-16-be", ["--encoding", "utf-16-be"]), ("utf-32", [])])
def test_utf16_imports(store, tmp_path, encoding, args):
    (tmp_path / "wide.csv").write_bytes(UTF16_CSV.encode(encoding))
    result = store.imports("wide.csv", *args)
    assert result["new"] == 2
    with store.engine.connect() as conn:
        texts = {t for (t,) in conn.exec_driver_sql("SELECT text FROM posts WHERE post_id IN ('906', '907')")}
    assert texts == {"un café très bon ce matin", "日本語の投稿です"}


def test_utf16_without_a_byte_order_mark_is_named(store, tmp_path):
    (tmp_path / "wide.csv").write_bytes(UTF16_CSV.encode("utf-16-le"))
    store.refuses(r"wide\.csv: binary file.*pass --encoding utf-16-le", "wide.csv")


def test_utf16_with_a_bad_line_names_it(store, tmp_path):
    (tmp_path / "wide.csv").write_bytes((UTF16_CSV + "908,broken\x00post,ann\n").encode("utf-16"))
    store.refuses(r"wide\.csv, line 4: contains a NUL character", "wide.csv")


def test_csv_with_twenty_thousand_columns(store, tmp_path):
    header = ",".join(f"column_{n}" for n in range(20_000))
    (tmp_path / "wide.csv").write_text(header + "\n" + ",".join("1" for _ in range(20_000)) + "\n")
    store.refuses(r"wide\.csv, line 1: CSV header has no text column .*column_11, … and 19,988 more\): pass --text-column NAME$", "wide.csv")
    result, _ = run_measured(store.home, "ingest", "wide.csv")
    assert len(result.stderr) < 500


ABSURD_ROWS = {  # a Trump Twitter Archive export: id,text,isRetweet,isDeleted,device,favorites,retweets,date
    "99999-01-01 00:00:00": r"date is not a time: '99999-01-01 00:00:00'",
    "-86400": r"date is not a time: '-86400'",
    "NaN": r"date is not a time: 'NaN'",
    "100000000000000000000": r"date is not a time: '100000000000000000000'",
    "1850-01-01 00:00:00": r"time 1850-01-01 00:00:00 is not a plausible post time",
    "0001-01-01": r"time 0001-01-01 00:00:00 is not a plausible post time",
}
ABSURD_IDS = {"abc": r"id is not a number: 'abc'", "9" * 5000: r"id is 5,000 characters \(longest allowed 300\)", "-5": r"id is not a number: '-5'"}
ABSURD_COUNTS = {"9" * 5000: r"favorites is a number of 5,000 digits: out of range", "1e999": r"favorites is not a number: '1e999'",
                 "99999999999999999999": r"favorites is out of range", "nan": r"favorites is not a number: 'nan'"}


def absurd_archive_csv(path: Path) -> Path:
    rows = ["id,text,isRetweet,isDeleted,device,favorites,retweets,date", "910,a perfectly normal post,f,f,web,1,2,2020-01-01 10:00:00"]
    rows += [f"{911 + n},post with an absurd date,f,f,web,1,2,{date}" for n, date in enumerate(ABSURD_ROWS)]
    rows += [f"{post_id},post with an absurd id,f,f,web,1,2,2020-01-01 10:00:00" for post_id in ABSURD_IDS]
    rows += [f"{930 + n},post with an absurd count,f,f,web,{count},2,2020-01-01 10:00:00" for n, count in enumerate(ABSURD_COUNTS)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_absurd_dates_ids_and_counts_are_bad_records(store, tmp_path):
    absurd_archive_csv(tmp_path / "absurd.csv")
    store.refuses(r"absurd\.csv: line 3: date is not a time: '99999-01-01 00:00:00' \(--skip-bad imports the other records\)",
                  "absurd.csv", "--author", "ann")
    result = store.imports("absurd.csv", "--author", "ann", "--skip-bad")
    assert result["new"] == 1
    reasons = [s["reason"] for s in result["skipped"]]
    expected = [*ABSURD_ROWS.values(), *ABSURD_IDS.values(), *ABSURD_COUNTS.values()]
    assert len(reasons) == len(expected)
    for reason, pattern in zip(reasons, expected, strict=True):
        assert re.search(pattern, reason), (reason, pattern)
        assert len(reason) < 200


def test_absurd_ids_in_an_x_archive(store, tmp_path):
    tweets = [archive_tweet("920", "a fine post"), archive_tweet("not-a-number", "a post with a word for an id")]
    (tmp_path / "tweets.js").write_text(ytd("tweets", tweets))
    store.refuses(r"tweets\.js: data/tweets\.js record 2: id is not a number: 'not-a-number'", "tweets.js", "--author", "ann")
    huge = ytd("tweets", [archive_tweet("921", "a fine post")])[:-2] + ', {"tweet": {"id": ' + "7" * 5000 + ', "full_text": "huge"}}]'
    (tmp_path / "tweets.js").write_text(huge)
    store.refuses(r"tweets\.js: data/tweets\.js record 2: id is 5,000 characters \(longest allowed 300\)", "tweets.js", "--author", "ann")


DEEP = "[" * 10_000 + "]" * 10_000


def test_deeply_nested_json(store, tmp_path):
    (tmp_path / "deep.jsonl").write_text('{"id_str": "1", "full_text": "fine", "user": {"screen_name": "ann"}}\n' + DEEP + "\n")
    store.refuses(r"deep\.jsonl: line 2: JSON nested too deeply", "deep.jsonl")
    (tmp_path / "tweets.js").write_text(f"window.YTD.tweets.part0 = [\n{DEEP}\n]")
    store.refuses(r"tweets\.js, line 2: JSON of record 1 is nested too deeply", "tweets.js", "--author", "ann")


JSON_ESCAPES = {"nul": r'"full_text": "before\u0000after"', "lone_surrogate": r'"full_text": "before\ud800after"',
                "surrogate_in_author": r'"full_text": "fine", "author": "an\udfffn"'}


@pytest.mark.parametrize("case", JSON_ESCAPES)
def test_json_escapes_that_no_store_can_hold(store, tmp_path, case):
    (tmp_path / "escapes.jsonl").write_text('{"id_str": "1", "user": {"screen_name": "ann"}, ' + JSON_ESCAPES[case] + "}\n")
    store.refuses(r"escapes\.jsonl: line 1: contains a NUL character or a lone surrogate", "escapes.jsonl")


def test_nested_json_where_a_value_is_expected(store, tmp_path):
    nested = "[" * 900 + "]" * 900  # parses, but printing it would recurse
    (tmp_path / "nested.jsonl").write_text('{"id_str": "1", "full_text": "a post", "user": {"screen_name": "ann"}, "favorite_count": '
                                           + nested + "}\n")
    store.refuses(r"nested\.jsonl: line 1: favorite_count is a JSON array, not a value", "nested.jsonl")


def test_utf16_tweets_js_imports(store, tmp_path):
    (tmp_path / "tweets.js").write_bytes(ytd("tweets", [archive_tweet("909", "un café écrit en UTF-16")]).encode("utf-16"))
    assert store.imports("tweets.js", "--author", "ann")["new"] == 1


def test_a_five_thousand_digit_number(store, tmp_path):
    line = '{"id_str": "1", "full_text": "a post", "user": {"screen_name": "ann"}, "favorite_count": ' + "8" * 5000 + "}"
    (tmp_path / "big.jsonl").write_text(line + "\n")
    store.refuses(r"big\.jsonl: line 1: favorite_count is a number of 5,000 digits: out of range", "big.jsonl")
    tweet = archive_tweet("922", "a post")
    tweet["tweet"]["favorite_count"] = 0
    (tmp_path / "tweets.js").write_text(ytd("tweets", [tweet]).replace('"favorite_count": 0', '"favorite_count": ' + "8" * 5000))
    store.refuses(r"tweets\.js: data/tweets\.js record 1: favorite_count is a number of 5,000 digits", "tweets.js", "--author", "ann")


def test_an_archive_file_over_the_size_limit(store, tmp_path):
    tweets = [archive_tweet(str(n), f"post number {n} of a big archive " + "words " * 40) for n in range(1000, 6000)]
    folder = make_archive(tmp_path / "export", "ann", [tweets], as_zip=False)
    store.refuses(r"export/data/tweets\.js: is larger than 1 MB once read", str(folder), env={"TWEETFORGE_IMPORT_MAX_ARCHIVE_FILE_MB": "1"})
    zipped = make_archive(tmp_path / "export.zip", "ann", [tweets])
    store.refuses(r"export\.zip:data/tweets\.js: is larger than 1 MB once read", str(zipped), env={"TWEETFORGE_IMPORT_MAX_ARCHIVE_FILE_MB": "1"})


def test_skip_bad_gives_up_after_the_limit_of_bad_records(store, tmp_path):
    (tmp_path / "numbers.jsonl").write_text("1\n" * 5000)
    store.refuses(r"numbers\.jsonl: more than 1,000 bad records \(limit TWEETFORGE_IMPORT_MAX_BAD_RECORDS\)", "numbers.jsonl", "--skip-bad",
                  env={"TWEETFORGE_IMPORT_MAX_BAD_RECORDS": "1000"})


def test_names_from_the_file_cannot_break_the_error_onto_several_lines(store, tmp_path):
    (tmp_path / "names.csv").write_text('id,"two\nlines",author\n1,x,ann\n')
    store.refuses(r"names\.csv, line 1: CSV header has no text column .*two\\nlines", "names.csv")
    path = make_archive(tmp_path / "names.zip", "ann", [[]])
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("../a\nb.js", "")
    store.refuses(r"names\.zip:\.\./a\\nb\.js: entry name is absolute", str(path))


def test_markup_in_names_from_the_file_is_printed_as_it_is(store, tmp_path):
    (tmp_path / "markup.csv").write_text("id,[/],[bold]author\n1,x,ann\n")
    store.refuses(r"markup\.csv, line 1: CSV header has no text column .*columns: id, \[/\], \[bold\]author", "markup.csv")


def test_an_x_archive_of_100000_tweets_imports_under_the_default_limits(store, tmp_path):
    tweets = [archive_tweet(str(10**17 + n), f"post number {n}, with enough words to look like one #{n % 97}") for n in range(100_000)]
    path = make_archive(tmp_path / "twitter-2024.zip", "ann", [tweets[:50_000], tweets[50_000:]])
    result = store.imports(str(path))
    assert result["new"] == 100_000 and result["skipped"] == []
