#!/usr/bin/env python
"""Benchmark: tweetforge's HTTP service (`tweetforge serve`: dynamic batching, KV-cached generate()) against
a "pipeline-per-request" baseline server, under closed-loop load on loopback, in the same run.

Servers. Each runs in its own subprocess on a free loopback port, started and stopped by this script, one
after the other (never both at once: the machine has 2 cores).

  tweetforge   `python -m tweetforge serve --port P --model REF` with TWEETFORGE_HOME=HOME and
               TWEETFORGE_RATE_LIMIT_PER_MINUTE=0 (the per-client rate limit off). Ready when /readyz is 200.
               Defaults: continuous batching of at most 16 posts (serve/continuous.py), queue 64, copy filter
               on; every request is logged to the home's database (as in production).
  baseline     a minimal FastAPI app in this file (`python benchmarks/serve.py --baseline-server --port P
               --model-dir DIR`): one `transformers.pipeline("text-generation", model=DIR)` built at start,
               called once per request behind a threading.Lock, with the same sampling (do_sample, top-p
               0.95, temperature 1, no top-k, max_new_tokens from the version's generation_config.json,
               num_return_sequences = n; top_k=None as tweetforge passes it: left out, transformers would
               add its default top-k 50, which makes shorter posts) and the same prefix a tweetforge post starts with (the end-of-post
               token), returning the texts. No copy filter, no database.

Load. httpx, N client threads at concurrency 1, 4, 16, 32, each sending {"model": REF, "prompt": "", "n": 1}
(no seed, so tweetforge may batch them) in a closed loop. Per server: a few untimed warm-up requests, then
per level: clients start requests until the level's time limit or request count is reached; requests
already sent finish and are counted. requests/s = successful requests / (last response - first request),
latency = per-request wall time seen by the client, tokens/s = tokens of the returned texts (the model's
tokenizer, no special tokens) / the same wall time. Errors (non-200, timeouts) are counted and excluded.
For tweetforge the mean posts per decoding step of each level comes from the /metrics batch histogram.

RSS. /proc/PID/status VmRSS (now) and VmHWM (peak) of each server process at the end of its run; and a
separate short tweetforge run with two models loaded (--model REF --model SECOND), after a few requests to each.

Model. A registered default-architecture (causal-lm, SmolLM2-135M) version. When the home has none, one is made
the cheap way (ingest example:trump, a 3,000-post dataset, `train --max-steps 2 --report-to none`); the serving
cost depends on the architecture and the length of the posts it writes, not on the quality of the training.
Precision: the service serves fp32; no precision change is made (on this CPU bf16 matmuls are ~3-5x slower,
see RESULTS.md's training section), so bits per character are unchanged. The weights are stored column-major
(generate.decode_layout): the same values, so the same bits per character.

Usage: .venv/bin/python benchmarks/serve.py [--home DIR] [--model REF] [--second-model REF] [--quick]
       [--levels 1,4,16,32] [--seconds 90] [--max-requests 300] [--warmup 3] [--only tweetforge|baseline]
       [--no-two-models]
Measured run: --home /work/evalhome/home --model trump:1 (second model trump-lstm:1).
Smoke test: --quick (concurrency 1 and 4, a few requests; about 2 minutes).
Results: benchmarks/RESULTS.md; raw numbers in benchmarks/.work/serve-results.json.
Many personas on one base (adapters against merged models): benchmarks/personas.py, which uses this load generator.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import machine

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
DEFAULT_HOME = WORK / "serve-home"
BODY_TIMEOUT_S = 600.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------
# the baseline server (runs in its own process)


def baseline_server(port: int, model_dir: Path) -> None:
    """A FastAPI app that calls one transformers pipeline per request, behind a lock."""
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import pipeline

    generator = pipeline("text-generation", model=str(model_dir))
    max_new_tokens = json.loads((model_dir / "generation_config.json").read_text()).get("max_new_tokens", 96)
    prefix = generator.tokenizer.eos_token  # a tweetforge post starts after the end-of-post token, as in training
    lock = threading.Lock()
    print(f"baseline: {model_dir}, dtype {generator.model.dtype}, max_new_tokens {max_new_tokens}, prefix ids "
          f"{generator.tokenizer(prefix)['input_ids']}", file=sys.stderr, flush=True)

    class Body(BaseModel):
        model: str
        prompt: str = ""
        n: int = 1

    app = FastAPI()

    def generate(body) -> dict:  # type: ignore[no-untyped-def]
        with lock:
            out = generator(prefix + body.prompt, do_sample=True, top_p=0.95, temperature=1.0, top_k=None, max_new_tokens=max_new_tokens,
                            num_return_sequences=body.n, return_full_text=False)
        return {"model": body.model, "posts": [{"text": (body.prompt + o["generated_text"]).strip(), "generated": True} for o in out]}

    generate.__annotations__["body"] = Body  # a real class, not the string `from __future__ import annotations` makes
    app.post("/v1/generate")(generate)

    @app.get("/readyz")
    def readyz() -> dict:
        return {"ready": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ----------------------------------------------------------------------------------------------------
# the home and its model


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "TWEETFORGE_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TWEETFORGE_RATE_LIMIT_PER_MINUTE": "0"}


def registered(home: Path) -> list[dict]:
    """(name, version, kind, path) of every registered version, read-only."""
    db = home / "tweetforge.db"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            rows = conn.execute("select name, version, kind, path from model_versions order by name, version").fetchall()
        except sqlite3.OperationalError:
            return []
    return [{"ref": f"{n}:{v}", "name": n, "version": v, "kind": k, "path": Path(p)} for n, v, k, p in rows]


def generation_rows(home: Path) -> int | None:
    db = home / "tweetforge.db"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("select count(*) from generations").fetchone()[0]
    except sqlite3.Error:
        return None


def run_cli(home: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "tweetforge", *args]
    log(f"$ TWEETFORGE_HOME={home} tweetforge {' '.join(args)}")
    done = subprocess.run(cmd, env=env_for(home), cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"tweetforge {args[0]} failed with exit code {done.returncode}")


def bootstrap(home: Path, versions: int) -> None:
    """A registered SmolLM2-135M fine-tune (or `versions` of them) made the cheap way: two training steps.
    The serving cost does not depend on how well the model is trained."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "datasets" / "bench-v1" / "manifest.json").exists():
        run_cli(home, "ingest", "example:trump")
        run_cli(home, "dataset", "create", "bench-v1", "--author", "realDonaldTrump", "--limit", "3000")
    while len([v for v in registered(home) if v["kind"] == "causal-lm"]) < versions:
        run_cli(home, "train", "bench-v1", "--max-steps", "2", "--report-to", "none")


def pick_models(home: Path, model: str | None, second: str | None, two_models: bool) -> tuple[dict, dict | None]:
    def find(ref: str) -> dict | None:
        return next((v for v in registered(home) if v["ref"] == ref), None)

    if model is None:
        if not any(v["kind"] == "causal-lm" for v in registered(home)):
            log(f"{home} has no registered default-architecture model: making one (2 training steps)")
            bootstrap(home, 1)
        chosen = next(v for v in registered(home) if v["kind"] == "causal-lm")
    else:
        chosen = find(model)
        if chosen is None:
            raise SystemExit(f"{model} is not registered in {home} (registered: {', '.join(v['ref'] for v in registered(home)) or 'none'})")
    if chosen["kind"] != "causal-lm":
        raise SystemExit(f"{chosen['ref']} is a {chosen['kind']} model; the benchmark needs the default architecture (causal-lm)")
    if not two_models:
        return chosen, None
    if second is not None:
        other = find(second)
        if other is None:
            raise SystemExit(f"{second} is not registered in {home}")
        return chosen, other
    others = [v for v in registered(home) if v["ref"] != chosen["ref"]]
    if not others:
        log(f"{home} has one model: training a second version for the two-model RSS run (2 training steps)")
        bootstrap(home, len([v for v in registered(home) if v["kind"] == "causal-lm"]) + 1)
        others = [v for v in registered(home) if v["ref"] != chosen["ref"]]
    return chosen, others[0]


# ----------------------------------------------------------------------------------------------------
# servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


class Server:
    def __init__(self, label: str, cmd: list[str], env: dict[str, str], log_path: Path):
        self.label, self.cmd, self.env, self.log_path = label, cmd, env, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [*cmd, "--port", str(self.port)]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 600.0) -> float:
        import httpx

        log(f"starting {self.label}: {' '.join(self.cmd)}")
        self.log_file = self.log_path.open("w")
        started = time.perf_counter()
        self.process = subprocess.Popen(self.cmd, env=self.env, cwd=ROOT, stdout=self.log_file, stderr=subprocess.STDOUT)
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.label} exited with {self.process.returncode} before it was ready:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    seconds = time.perf_counter() - started
                    log(f"{self.label} ready on {self.url} after {seconds:.1f} s, RSS {proc_memory(self.process.pid)['VmRSS']:,.0f} MiB")
                    return seconds
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise SystemExit(f"{self.label} not ready after {timeout:.0f} s:\n{self.tail()}")

    def memory(self) -> dict[str, float]:
        assert self.process is not None
        return proc_memory(self.process.pid)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            log(f"{self.label} did not stop on SIGINT within 60 s: killing it")
            self.process.kill()
            self.process.wait()
        self.log_file.close()


# ----------------------------------------------------------------------------------------------------
# load


@dataclass
class Result:
    started: float
    ended: float
    status: int
    texts: list[str] = field(default_factory=list)
    error: str | None = None


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def run_level(client, url: str, model: str | list[str], concurrency: int, seconds: float, max_requests: int) -> list[Result]:  # type: ignore[no-untyped-def]
    """Closed loop: `concurrency` threads, each sending its next request as soon as the last one returned,
    until `seconds` have passed or `max_requests` were sent. Requests in flight at the limit finish. With a
    list of models, client i asks models[i % len(models)]."""
    models = [model] if isinstance(model, str) else model
    import httpx

    results: list[Result] = []
    lock = threading.Lock()
    sent = [0]
    barrier = threading.Barrier(concurrency)
    deadline = [0.0]

    def worker(model: str) -> None:
        barrier.wait()
        with lock:
            if not deadline[0]:
                deadline[0] = time.perf_counter() + seconds
        while True:
            with lock:
                if time.perf_counter() >= deadline[0] or sent[0] >= max_requests:
                    return
                sent[0] += 1
            started = time.perf_counter()
            try:
                response = client.post(f"{url}/v1/generate", json={"model": model, "prompt": "", "n": 1})
                ended = time.perf_counter()
                if response.status_code == 200:
                    result = Result(started, ended, 200, [p["text"] for p in response.json()["posts"]])
                else:
                    result = Result(started, ended, response.status_code, error=response.text[:300])
            except httpx.HTTPError as exc:
                result = Result(started, time.perf_counter(), 0, error=f"{type(exc).__name__}: {exc}"[:300])
            with lock:
                results.append(result)

    threads = [threading.Thread(target=worker, args=(models[i % len(models)],), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def summarize(results: list[Result], tokenizer, concurrency: int) -> dict:  # type: ignore[no-untyped-def]
    ok = [r for r in results if r.status == 200]
    errors: dict[str, int] = {}
    for r in results:
        if r.status != 200:
            key = f"{r.status}: {r.error}"[:160]
            errors[key] = errors.get(key, 0) + 1
    first = min((r.started for r in results), default=0.0)
    wall = max(r.ended for r in results) - first if results else float("nan")
    latencies = [r.ended - r.started for r in ok]
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for r in ok for t in r.texts)
    posts = sum(len(r.texts) for r in ok)
    return {
        "concurrency": concurrency, "requests": len(results), "ok": len(ok), "errors": sum(errors.values()), "error_kinds": errors,
        "wall_seconds": wall, "requests_per_second": len(ok) / wall if wall else 0.0,
        "p50_seconds": percentile(latencies, 0.50), "p99_seconds": percentile(latencies, 0.99), "max_seconds": max(latencies, default=float("nan")),
        "mean_seconds": sum(latencies) / len(latencies) if latencies else float("nan"),
        "tokens": tokens, "tokens_per_second": tokens / wall if wall else 0.0, "posts": posts,
        "tokens_per_post": tokens / posts if posts else float("nan"),
        "raw": [{"start": round(r.started - first, 4), "seconds": round(r.ended - r.started, 4), "status": r.status,
                 "tokens": [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in r.texts]} for r in results],
    }


def batch_metrics(client, url: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """tweetforge's /metrics counters this benchmark reads: batches, posts in them, tokens generated."""
    out: dict[str, float] = {}
    text = client.get(f"{url}/metrics").text
    for line in text.splitlines():
        for name, key in (("tweetforge_batch_posts_count", "batches"), ("tweetforge_batch_posts_sum", "posts"),
                          ("tweetforge_generated_tokens_total", "tokens")):
            if line.startswith(name + " "):
                out[key] = float(line.split()[1])
        if line.startswith("tweetforge_batch_posts_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[f"le_{le}"] = float(line.split()[1])
    return out


def load_server(server: Server, model: str, tokenizer, levels: list[int], seconds: float, max_requests: int,  # type: ignore[no-untyped-def]
                warmup: int, metrics: bool) -> list[dict]:
    import httpx

    rows = []
    limits = httpx.Limits(max_connections=max(levels) + 8, max_keepalive_connections=max(levels) + 8)
    with httpx.Client(timeout=BODY_TIMEOUT_S, limits=limits) as client:
        if warmup:
            log(f"{server.label}: {warmup} warm-up request(s)")
            warm = run_level(client, server.url, model, 1, 600.0, warmup)
            bad = [r for r in warm if r.status != 200]
            if bad:
                raise SystemExit(f"{server.label} warm-up failed: {bad[0].status} {bad[0].error}\n{server.tail()}")
        for concurrency in levels:
            before = batch_metrics(client, server.url) if metrics else {}
            log(f"{server.label}: concurrency {concurrency} (up to {seconds:.0f} s or {max_requests} requests)")
            results = run_level(client, server.url, model, concurrency, seconds, max_requests)
            row = summarize(results, tokenizer, concurrency)
            if metrics:
                after = batch_metrics(client, server.url)
                delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                row["batches"] = int(delta.get("batches", 0))
                row["posts_per_batch_metrics"] = delta["posts"] / delta["batches"] if delta.get("batches") else None
                row["posts_per_batch"] = row["posts_per_batch_metrics"]
                row["batch_histogram"] = {k[3:]: int(v) for k, v in delta.items() if k.startswith("le_")}
            row["rss_mib"] = server.memory()
            rows.append(row)
            extra = f", {row['posts_per_batch'] or float('nan'):.1f} posts per decoding step" if metrics else ""
            log(f"{server.label} c={concurrency}: {row['ok']} ok, {row['errors']} errors in {row['wall_seconds']:.1f} s: "
                f"{row['requests_per_second']:.2f} req/s, p50 {row['p50_seconds']:.2f} s, p99 {row['p99_seconds']:.2f} s, "
                f"{row['tokens_per_second']:.1f} tokens/s{extra}")
            for kind, count in row["error_kinds"].items():
                log(f"  error x{count}: {kind}")
    return rows


def two_model_run(home: Path, first: dict, second: dict, requests_each: int, concurrency: int) -> dict:
    """tweetforge with two models loaded: RSS when ready, and after a few requests to each."""
    import httpx

    cmd = [sys.executable, "-m", "tweetforge", "serve", "--model", first["ref"], "--model", second["ref"]]
    server = Server("tweetforge (two models)", cmd, env_for(home), WORK / "serve-two-models.log")
    out: dict = {"models": [first["ref"], second["ref"]]}
    try:
        out["ready_seconds"] = server.start()
        out["rss_ready_mib"] = server.memory()
        out["requests"] = {}
        with httpx.Client(timeout=BODY_TIMEOUT_S) as client:
            for ref in (first["ref"], second["ref"]):
                results = run_level(client, server.url, ref, concurrency, 600.0, requests_each)
                errors = [f"{r.status}: {r.error}" for r in results if r.status != 200]
                out["requests"][ref] = {"ok": sum(r.status == 200 for r in results), "errors": errors}
        out["rss_after_mib"] = server.memory()
        log(f"two models: RSS {out['rss_after_mib']['VmRSS']:,.0f} MiB now, {out['rss_after_mib']['VmHWM']:,.0f} MiB peak "
            f"(ready: {out['rss_ready_mib']['VmRSS']:,.0f} MiB)")
    finally:
        server.stop()
    return out


# ----------------------------------------------------------------------------------------------------
# report


def table(label: str, rows: list[dict], batching: bool) -> str:
    head = "| clients | requests ok / errors | wall s | requests/s | p50 s | p99 s | tokens/s | tokens/post |"
    rule = "|---|---|---|---|---|---|---|---|"
    if batching:
        head, rule = head + " posts/batch * |", rule + "---|"
    lines = [f"{label}", head, rule]
    for r in rows:
        line = (f"| {r['concurrency']} | {r['ok']} / {r['errors']} | {r['wall_seconds']:.1f} | {r['requests_per_second']:.2f} | "
                f"{r['p50_seconds']:.2f} | {r['p99_seconds']:.2f} | {r['tokens_per_second']:.1f} | {r['tokens_per_post']:.1f} |")
        if batching:
            line += f" {r.get('posts_per_batch') or float('nan'):.1f} |"
        lines.append(line)
    if batching:
        lines.append("\n* mean posts per decoding step (prefills included), from /metrics")
    return "\n".join(lines)


def ratio_table(ours: list[dict], base: list[dict]) -> str:
    lines = ["| clients | requests/s tweetforge / baseline | p99 tweetforge / baseline (< 1 is better) | tokens/s tweetforge / baseline |",
             "|---|---|---|---|"]
    by_level = {r["concurrency"]: r for r in base}
    for r in ours:
        b = by_level.get(r["concurrency"])
        if b is None:
            continue
        rps = r["requests_per_second"] / b["requests_per_second"] if b["requests_per_second"] else float("nan")
        p99 = r["p99_seconds"] / b["p99_seconds"] if b["p99_seconds"] else float("nan")
        tps = r["tokens_per_second"] / b["tokens_per_second"] if b["tokens_per_second"] else float("nan")
        lines.append(f"| {r['concurrency']} | {rps:.2f}× | {p99:.2f}× | {tps:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help=f"tweetforge data home (default {DEFAULT_HOME.relative_to(ROOT)})")
    parser.add_argument("--model", help="a registered causal-lm version, NAME:VERSION (default: the first one; made if none)")
    parser.add_argument("--second-model", help="the other model of the two-model RSS run (default: any other registered version)")
    parser.add_argument("--levels", default="1,4,16,32", help="concurrency levels, comma-separated")
    parser.add_argument("--seconds", type=float, default=90.0, help="time limit per level (requests in flight then finish)")
    parser.add_argument("--max-requests", type=int, default=300, help="request limit per level")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per server before the first level")
    parser.add_argument("--only", choices=("tweetforge", "baseline"), help="run one server only")
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/.work/serve-results*.json)")
    parser.add_argument("--no-two-models", action="store_true", help="skip the two-model RSS run")
    parser.add_argument("--quick", action="store_true", help="smoke test: concurrency 1 and 4, a few requests (about 2 minutes)")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        baseline_server(args.port, args.model_dir)
        return
    if args.quick:
        args.levels, args.seconds, args.max_requests, args.warmup = "1,4", 20.0, 8, 1
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    home = args.home.expanduser().resolve()
    WORK.mkdir(parents=True, exist_ok=True)
    two_models = not args.no_two_models and args.only != "baseline"
    model, second = pick_models(home, args.model, args.second_model, two_models)
    log(f"home {home}; model {model['ref']} ({model['path']}); levels {levels}, {args.seconds:.0f} s or {args.max_requests} requests each")

    import torch
    import transformers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model["path"]))
    result: dict = {"machine": machine(), "python": platform.python_version(), "torch": torch.__version__,
                    "transformers": transformers.__version__, "home": str(home), "model": model["ref"], "levels": levels,
                    "seconds": args.seconds, "max_requests": args.max_requests, "warmup": args.warmup, "argv": sys.argv[1:]}
    rows_before = generation_rows(home)
    result["started_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    env = env_for(home)
    sides = {  # label: (command, whether it reports its batches in /metrics)
        "tweetforge": ([sys.executable, "-m", "tweetforge", "serve", "--model", model["ref"]], True),
        "baseline": ([sys.executable, str(Path(__file__).resolve()), "--baseline-server", "--model-dir", str(model["path"])], False),
    }
    for label, (cmd, batching) in sides.items():
        if args.only not in (None, label):
            continue
        server = Server(label, cmd, env, WORK / f"serve-{label}.log")
        try:
            result[f"{label}_ready_seconds"] = server.start()
            result[f"{label}_rss_ready_mib"] = server.memory()
            result[label] = load_server(server, model["ref"], tokenizer, levels, args.seconds, args.max_requests, args.warmup, batching)
            result[f"{label}_rss_end_mib"] = server.memory()
        finally:
            server.stop()
    if two_models and second is not None:
        result["two_models"] = two_model_run(home, model, second, 2 if args.quick else 4, 2 if args.quick else 4)
    rows_after = generation_rows(home)
    result["ended_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["generation_rows_added"] = rows_after - rows_before if rows_before is not None and rows_after is not None else None

    print(f"\n{result['machine']}; Python {result['python']}, torch {result['torch']}, transformers {result['transformers']}; "
          f"model {model['ref']}; {args.seconds:.0f} s or {args.max_requests} requests per level\n")
    if "tweetforge" in result:
        print(table("tweetforge serve (continuous batching, max batch 16):", result["tweetforge"], True) + "\n")
        rss = result["tweetforge_rss_end_mib"]
        print(f"tweetforge server RSS at the end: {rss['VmRSS']:,.0f} MiB now, {rss['VmHWM']:,.0f} MiB peak\n")
    if "baseline" in result:
        print(table("baseline (transformers.pipeline per request, behind a lock):", result["baseline"], False) + "\n")
        rss = result["baseline_rss_end_mib"]
        print(f"baseline server RSS at the end: {rss['VmRSS']:,.0f} MiB now, {rss['VmHWM']:,.0f} MiB peak\n")
    if "tweetforge" in result and "baseline" in result:
        print(ratio_table(result["tweetforge"], result["baseline"]) + "\n")
    if "two_models" in result:
        t = result["two_models"]
        print(f"two models loaded ({', '.join(t['models'])}): RSS {t['rss_ready_mib']['VmRSS']:,.0f} MiB when ready, "
              f"{t['rss_after_mib']['VmRSS']:,.0f} MiB now / {t['rss_after_mib']['VmHWM']:,.0f} MiB peak after "
              f"{', '.join(str(v['ok']) + ' requests to ' + k for k, v in t['requests'].items())} (target ≤ 1,536 MiB)")
    if result["generation_rows_added"] is not None:
        print(f"generations logged to {home / 'tweetforge.db'} by this run: {result['generation_rows_added']} "
              f"(between {result['started_utc']} and {result['ended_utc']})")
    out = args.out or WORK / ("serve-results-quick.json" if args.quick else "serve-results.json")
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nfull results: {out}")


if __name__ == "__main__":
    main()
