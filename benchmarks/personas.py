#!/usr/bin/env python
"""Benchmark (benchmarks/serve.py's persona part): many personas served as LoRA adapters on one shared base,
against today's one-merged-model-per-persona server and the transformers.pipeline baseline, in one run.

Personas. A fresh home: example:trump, a 3,000-post dataset, one LoRA fine-tune with the default recipe
(adapters on q/k/v/o and the MLP of the top 15 layers, r=16) made the cheap way (2 training steps):
persona00. Personas 01-49 are registered copies of it whose adapter weights are persona00's plus
independent noise (same shapes, different outputs); their merged exports are hard links to persona00's.
The serving cost depends on the adapters' shapes and the posts' lengths, not on what they learnt.

Memory. VmRSS of `tweetforge serve --no-ui` holding 1, 10 and 50 personas as adapters (after two requests
to each of up to 10 of them), against the same server with --merged holding 1 and 2 merged models; the
merged figure for 10 and 50 is extrapolated from those two (50 merged models do not fit in 24 GiB).

Throughput. 16 closed-loop clients (benchmarks/serve.py's load generator, /v1/generate, n=1) spread over
1, 4 and 16 personas: client i asks persona i mod P. Against the shared server (16 adapters loaded), the
merged server (P merged models loaded: each persona its own batcher) and, for one persona, the pipeline
baseline. Each level runs for --seconds or --max-requests.

Decode steps (in-process, no HTTP, after the servers): the shared base with 16 adapters in its bank
runs 16 rows with a 40-token cache, all rows on one adapter, then one row per adapter (16 adapters in
one pass), alternating five times, 40 timed steps each; also the base alone. This isolates what mixing
costs from the scheduling and sampling noise of the closed-loop levels.

Adapter load while serving. Under the 16-client load on 4 personas, one request to a persona not yet
loaded (its adapter is read and put in the bank by that request): its latency and that of the next request
to it, and the errors of every client meanwhile.

Usage: .venv/bin/python benchmarks/personas.py [--seconds 45] [--max-requests 200] [--home DIR] [--steps-only]
(--steps-only: only the decode steps, added to the last run's results, which are printed again.)
Results: benchmarks/RESULTS.md; raw numbers in benchmarks/.work/personas-results.json."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from common import machine
from serve import WORK, Server, bootstrap, env_for, log, run_level, summarize

PERSONAS = 50


def make_personas(home: Path) -> list[str]:
    """persona00 trained; persona01-49 its registered copies with perturbed adapters."""
    import torch
    from safetensors.torch import load_file, save_file
    from sqlalchemy import insert

    from tweetforge.db.engine import engine_for
    from tweetforge.db.schema import model_versions
    from tweetforge.registry.adapters import WEIGHTS
    from tweetforge.registry.versions import list_versions

    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    names = [f"persona{i:02d}" for i in range(PERSONAS)]
    have = {v.name for v in list_versions(engine)}
    if names[0] not in have:
        bootstrap(home, 0)
        from serve import run_cli

        run_cli(home, "train", "bench-v1", "--max-steps", "2", "--report-to", "none", "--name", names[0])
    first = next(v for v in list_versions(engine, names[0]))
    if not first.params.get("adapter"):
        raise SystemExit(f"{first.ref} has no adapter: train it with this version of tweetforge")
    weights = load_file(first.path / "adapter" / WEIGHTS)
    generator = torch.Generator().manual_seed(0)
    for i, name in enumerate(names[1:], start=1):
        if name in have:
            continue
        target = home / "models" / name / "1"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(first.path, target, copy_function=os.link, ignore=shutil.ignore_patterns("adapter"))
        shutil.copytree(first.path / "adapter", target / "adapter", ignore=shutil.ignore_patterns(WEIGHTS))
        noisy = {k: v + 0.5 * v.std() * torch.randn(v.shape, generator=generator) if ".lora_" in k else v for k, v in weights.items()}
        save_file(noisy, target / "adapter" / WEIGHTS, metadata={"format": "pt"})
        info = json.loads((target / "tweetforge.json").read_text()) | {"ref": f"{name}:1", "name": name, "path": str(target)}
        (target / "tweetforge.json").unlink()  # a hard link to persona00's: replace, do not write through
        (target / "tweetforge.json").write_text(json.dumps(info, indent=2))
        with engine.begin() as conn:
            conn.execute(insert(model_versions).values(
                name=name, version=1, kind=first.kind, path=str(target), base=first.base, dataset=first.dataset, dataset_hash=first.dataset_hash,
                run_id=f"{first.run_id}-copy{i}", params=first.params, metrics=first.metrics, created_at=first.created_at))
        log(f"{name}: registered as a copy of {first.ref} with a perturbed adapter")
    return names


def serve_command(personas: list[str], merged: bool) -> list[str]:
    cmd = [sys.executable, "-m", "tweetforge", "serve", "--no-ui", "--max-adapters", str(PERSONAS)]
    for name in personas:
        cmd += ["--model", name]
    return cmd + (["--merged"] if merged else [])


def memory_run(home: Path, personas: list[str], merged: bool) -> dict:
    import httpx

    label = f"{'merged' if merged else 'adapters'} x{len(personas)}"
    server = Server(label, serve_command(personas, merged), env_for(home), WORK / f"personas-{label.replace(' ', '')}.log")
    try:
        ready = server.start()
        with httpx.Client(timeout=600) as client:
            for name in personas[:10]:
                for _ in range(2):
                    response = client.post(f"{server.url}/v1/generate", json={"model": name, "n": 1})
                    if response.status_code != 200:
                        raise SystemExit(f"{label}: {name} answered {response.status_code}: {response.text[:300]}")
        memory = server.memory()
        log(f"{label}: RSS {memory['VmRSS']:,.0f} MiB (peak {memory['VmHWM']:,.0f}), ready after {ready:.1f} s")
        return {"personas": len(personas), "merged": merged, "ready_seconds": ready, **memory}
    finally:
        server.stop()


def throughput_run(home: Path, cmd: list[str], label: str, spread: list[str], tokenizer, seconds: float, max_requests: int) -> dict:  # type: ignore[no-untyped-def]
    import httpx

    server = Server(label, cmd, env_for(home), WORK / f"personas-{label.replace(' ', '-').replace('/', '')}.log")
    try:
        server.start()
        with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=40, max_keepalive_connections=40)) as client:
            run_level(client, server.url, spread, len(spread), 600, len(spread))  # warm-up: one request per persona
            row = summarize(run_level(client, server.url, spread, 16, seconds, max_requests), tokenizer, 16)
        row |= {"label": label, "personas": len(set(spread)), "rss_mib": server.memory()["VmRSS"]}
        row.pop("raw")
        log(f"{label}: {row['requests_per_second']:.2f} req/s, p50 {row['p50_seconds']:.2f} s, p99 {row['p99_seconds']:.2f} s, "
            f"{row['errors']} errors, RSS {row['rss_mib']:,.0f} MiB")
        return row
    finally:
        server.stop()


def load_while_serving(home: Path, personas: list[str], tokenizer, seconds: float) -> dict:  # type: ignore[no-untyped-def]
    """16 clients on personas 0-3 of a server holding those 4; meanwhile a request to persona 4, twice."""
    import httpx

    server = Server("adapters x4 + one loaded while serving", serve_command(personas[:4], merged=False), env_for(home),
                    WORK / "personas-load-while-serving.log")
    try:
        server.start()
        with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=40, max_keepalive_connections=40)) as client:
            run_level(client, server.url, personas[:4], 4, 600, 4)
            results: list = []
            load = threading.Thread(target=lambda: results.extend(run_level(client, server.url, personas[:4], 16, seconds, 10_000)))
            load.start()
            time.sleep(seconds / 3)
            timings = []
            for _ in range(2):
                started = time.perf_counter()
                response = client.post(f"{server.url}/v1/generate", json={"model": personas[4], "n": 1})
                timings.append((time.perf_counter() - started, response.status_code))
            load.join()
        row = summarize(results, tokenizer, 16)
        out = {"first_request_seconds": timings[0][0], "second_request_seconds": timings[1][0], "statuses": [t[1] for t in timings],
               "load_requests_ok": row["ok"], "load_errors": row["errors"], "load_p50_seconds": row["p50_seconds"],
               "load_p99_seconds": row["p99_seconds"]}
        log(f"adapter loaded while serving: first request {timings[0][0]:.2f} s, second {timings[1][0]:.2f} s; "
            f"the other clients: {row['ok']} ok, {row['errors']} errors, p50 {row['p50_seconds']:.2f} s")
        return out
    finally:
        server.stop()


def decode_steps(home: Path, personas: list[str], rounds: int = 5, steps: int = 40) -> dict:
    """Milliseconds per decode step of 16 rows: base alone, one adapter, 16 adapters mixed (median of rounds)."""
    import statistics

    import torch
    from transformers import DynamicCache

    from tweetforge.db.engine import engine_for
    from tweetforge.generation.generate import decode_layout
    from tweetforge.registry.versions import resolve
    from tweetforge.serving.lora_bank import LoraBank
    from tweetforge.training.models.causal_lm import load_pretrained

    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    versions = [resolve(engine, name) for name in personas[:16]]
    model, _ = load_pretrained(Path(versions[0].params["adapter"]["base_path"]), [], lora=None)
    model.eval()
    decode_layout(model)
    bank = LoraBank(model)
    slots = [bank.add(v.path / "adapter") for v in versions]
    ids = torch.randint(0, model.config.vocab_size, (16, 40), generator=torch.Generator().manual_seed(0))
    layouts = {"base": [0] * 16, "one adapter": [slots[0]] * 16, "16 adapters": slots}
    timings: dict[str, list[float]] = {k: [] for k in layouts}
    with torch.inference_mode():
        for _ in range(rounds):
            for label, rows in layouts.items():
                bank.use(rows)
                cache = model(input_ids=ids, past_key_values=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1).past_key_values
                for _ in range(3):
                    model(input_ids=ids[:, -1:], past_key_values=cache, use_cache=True, logits_to_keep=1)
                started = time.perf_counter()
                for _ in range(steps):
                    model(input_ids=ids[:, -1:], past_key_values=cache, use_cache=True, logits_to_keep=1)
                timings[label].append((time.perf_counter() - started) / steps * 1000)
    out = {label: statistics.median(t) for label, t in timings.items()}
    log("decode step of 16 rows: " + ", ".join(f"{k} {v:.1f} ms" for k, v in out.items()))
    return {"milliseconds": out, "all": timings, "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=WORK / "personas-home")
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--max-requests", type=int, default=200)
    parser.add_argument("--steps-only", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    home = args.home.resolve()
    personas = make_personas(home)
    from transformers import AutoTokenizer

    from tweetforge.db.engine import engine_for
    from tweetforge.registry.versions import resolve

    first = resolve(engine_for(f"sqlite:///{home / 'tweetforge.db'}"), personas[0])
    tokenizer = AutoTokenizer.from_pretrained(first.path)
    if args.steps_only:
        result = json.loads((WORK / "personas-results.json").read_text())
        result["decode_steps"] = decode_steps(home, personas) | {"machine": machine(), "at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (WORK / "personas-results.json").write_text(json.dumps(result, indent=2, default=str))
        report(result)
        return
    result: dict = {"machine": machine(), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "adapter": first.params["adapter"]}

    result["memory"] = [memory_run(home, personas[:k], merged=False) for k in (1, 10, 50)]
    result["memory"] += [memory_run(home, personas[:k], merged=True) for k in (1, 2)]
    merged = {m["personas"]: m["VmRSS"] for m in result["memory"] if m["merged"]}
    per_model = merged[2] - merged[1]
    result["merged_extrapolated_mib"] = {k: merged[1] + (k - 1) * per_model for k in (10, 50)}

    result["throughput"] = []
    for spread_over in (1, 4, 16):
        spread = [personas[i % spread_over] for i in range(16)]
        result["throughput"].append(throughput_run(home, serve_command(personas[:16], merged=False), f"adapters 16 loaded / {spread_over} asked",
                                                   spread, tokenizer, args.seconds, args.max_requests))
        result["throughput"].append(throughput_run(home, serve_command(personas[:spread_over], merged=True), f"merged x{spread_over}",
                                                   spread, tokenizer, args.seconds, args.max_requests))
    baseline = [sys.executable, str(Path(__file__).with_name("serve.py")), "--baseline-server", "--model-dir", str(first.path)]
    result["throughput"].append(throughput_run(home, baseline, "pipeline baseline x1", [personas[0]] * 16, tokenizer, args.seconds,
                                               min(args.max_requests, 60)))
    result["load_while_serving"] = load_while_serving(home, personas, tokenizer, args.seconds)
    result["decode_steps"] = decode_steps(home, personas)
    (WORK / "personas-results.json").write_text(json.dumps(result, indent=2, default=str))
    report(result)


def report(result: dict) -> None:
    merged = {m["personas"]: m["VmRSS"] for m in result["memory"] if m["merged"]}
    print(f"\n# benchmarks/personas.py — {time.strftime('%Y-%m-%d %H:%M')}, {result['machine']}")
    a = result["adapter"]
    print(f"adapter: rank {a['rank']}, {a['bytes'] / 2**20:.1f} MiB on disk\n")
    print("| personas in memory | adapters on one base: RSS MiB | merged models: RSS MiB | merged / adapters |\n|---|---|---|---|")
    for k in (1, 10, 50):
        ours = next(m["VmRSS"] for m in result["memory"] if not m["merged"] and m["personas"] == k)
        theirs = merged.get(k) or {int(n): v for n, v in result["merged_extrapolated_mib"].items()}[k]
        note = "" if k in merged else " (extrapolated)"
        print(f"| {k} | {ours:,.0f} | {theirs:,.0f}{note} | {theirs / ours:.1f}× |")
    single = next(r for r in result["throughput"] if r["label"] == "adapters 16 loaded / 1 asked")
    print("\n| 16 clients over | server | requests/s | × adapters over 1 persona | tokens/s | × | p50 s | p99 s | errors | RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in result["throughput"]:
        ratio = r["requests_per_second"] / single["requests_per_second"]
        tokens = r["tokens_per_second"] / single["tokens_per_second"]
        print(f"| {r['personas']} | {r['label']} | {r['requests_per_second']:.2f} | {ratio:.2f} | {r['tokens_per_second']:.1f} | {tokens:.2f} | "
              f"{r['p50_seconds']:.2f} | {r['p99_seconds']:.2f} | {r['errors']} | {r['rss_mib']:,.0f} |")
    w = result["load_while_serving"]
    print(f"\nadapter loaded while serving: its first request {w['first_request_seconds']:.2f} s, the next {w['second_request_seconds']:.2f} s; "
          f"the 16 other clients meanwhile: {w['load_requests_ok']} ok, {w['load_errors']} errors, p99 {w['load_p99_seconds']:.2f} s")
    if "decode_steps" in result:
        ms = result["decode_steps"]["milliseconds"]
        print(f"\ndecode step of 16 rows (median of {len(result['decode_steps']['all']['base'])} rounds): base alone {ms['base']:.1f} ms, "
              f"one adapter {ms['one adapter']:.1f} ms, 16 adapters mixed {ms['16 adapters']:.1f} ms: "
              f"mixed at {ms['one adapter'] / ms['16 adapters']:.2f}× the single-adapter step rate")


if __name__ == "__main__":
    main()
