#!/usr/bin/env python
"""Benchmark: training throughput of one process against `--nproc 2` (DDP over gloo) on this machine, in one run.

The default recipe (SmolLM2-135M, LoRA on the top 15 layers, bottom cached) on the first 3,000 posts of
example:trump, the same global batch (--batch-size 8) and the same steps, as `tweetforge train` runs it;
each variant trains --steps steps (validation off) and is registered. Throughput is the training loop's
own tokens/s of the global batch (the registered metrics), and the command's wall time. On a 2-core machine
the two ranks split the cores (one thread each), so the figure is what DDP costs or gains here, not on
a machine with cores or GPUs to spare.

Usage: .venv/bin/python benchmarks/distributed.py [--steps 24] [--rounds 2] [--home DIR]
Results: benchmarks/RESULTS.md; raw numbers in benchmarks/.work/distributed-results.json."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import machine
from serve import ROOT, WORK, bootstrap, env_for, log


def train_once(home: Path, nproc: int, steps: int, name: str) -> dict:
    cmd = [sys.executable, "-m", "tweetforge", "train", "bench-v1", "--name", name, "--max-steps", str(steps), "--eval-every", "100000",
           "--report-to", "none", "--nproc", str(nproc), "--json"]
    log(f"$ tweetforge {' '.join(cmd[3:])}")
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env_for(home), cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"--nproc {nproc} failed with exit code {done.returncode}")
    summary = json.loads(done.stdout)
    metrics = summary["metrics"]
    row = {"nproc": nproc, "steps": metrics["steps"], "tokens": metrics["train_tokens"], "tokens_per_second": metrics["tokens_per_second"],
           "wall_seconds": wall, "seconds": summary.get("seconds", {}), "val_loss": metrics.get("val_loss")}
    log(f"--nproc {nproc}: {row['tokens_per_second']:,.0f} tokens/s in the loop, {wall:.0f} s wall")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=WORK / "distributed-home")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    home = args.home.resolve()
    bootstrap(home, 0)
    rows = []
    for round_ in range(args.rounds):  # alternating, so a machine whose speed drifts weighs on both
        for nproc in (1, 2):
            rows.append(train_once(home, nproc, args.steps, f"ddp-bench-{nproc}-{round_}"))
    result = {"machine": machine(), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "distributed-results.json").write_text(json.dumps(result, indent=2))

    median = {n: statistics.median(r["tokens_per_second"] for r in rows if r["nproc"] == n) for n in (1, 2)}
    wall = {n: statistics.median(r["wall_seconds"] for r in rows if r["nproc"] == n) for n in (1, 2)}
    print(f"\n# benchmarks/distributed.py — {time.strftime('%Y-%m-%d %H:%M')}, {result['machine']}, {args.steps} steps, {args.rounds} rounds\n")
    print("| processes | tokens/s in the loop (median) | × one process | command wall s (median) |\n|---|---|---|---|")
    for n in (1, 2):
        print(f"| {n} | {median[n]:,.0f} | {median[n] / median[1]:.2f} | {wall[n]:.0f} |")


if __name__ == "__main__":
    main()
