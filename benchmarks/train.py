#!/usr/bin/env python
"""Benchmark: training throughput of tweetforge's default configuration against the naive recipe, and
time-to-model through the real CLI.

Part 1, throughput. Every variant trains the same model (SmolLM2-135M, the bundled offline conversion)
on the same real posts (example:trump, first 3,000 stored posts, the train split of a
`create_snapshot(..., SnapshotRequest("trump-3k", ("realDonaldTrump",), limit=3000))` snapshot), each
in its own subprocess so that its peak RSS (os.wait4) is its own. Tokens/s counts real tokens only
(padding is not counted). Every variant is warmed up before timing (compile included in the warm-up).

  naive            fp32, full fine-tune, one post per row padded (and truncated) to 64 tokens, labels -100
                   on padding, torch.optim.AdamW with its defaults (the HuggingTweets recipe)
  packed-full      fp32, full fine-tune, posts packed with end-of-post separators into 64-token blocks
  lora-fp32        fp32, LoRA r=16 on q/k/v/o over packed 64-token blocks (the default before the
                   allocator change)
  default          whatever TrainConfig() defaults and train() do now (threads, allocator, precision,
                   block size, compile)
  lora-compile     lora-fp32 + torch.compile
  lora-bf16        lora-fp32 with the frozen base held in bf16 and bf16 autocast (the other machine's default)
  lora-b128        lora-fp32 with 128-token blocks (batch 8: twice the tokens per step)
  lora-1thread     lora-fp32 with torch.set_num_threads(1) (is the second core worth it?)
  lora-qv          LoRA on q/v only
  lora-malloc      lora-fp32 with glibc told to keep freed memory (MALLOC_MMAP_MAX_=0, no trimming)
  default-compile  default + torch.compile

MFU is reported against this machine's measured fp32 and bf16 matmul peaks (best of a few square and
model-shaped matmuls, measured in this run). Model FLOPs per real token: forward = 2 x (parameters of
every matmul incl. the LM head) + attention (4 x layers x context x width, causal halved); full
fine-tune = 3 x forward; LoRA = 2 x forward (the frozen weights need input gradients but no weight
gradients) + 6 x adapter parameters.

Part 2, time-to-model. A fresh temporary data home (so the base model conversion is measured), then the
real CLI: `tweetforge ingest example:trump`, `tweetforge dataset create trump-3k --author realDonaldTrump
--limit 3000`, `tweetforge train trump-3k --epochs 2 --json`; wall time and peak RSS (wait4) per stage.

Usage: .venv/bin/python benchmarks/train.py [--variants a,b,...|all] [--steps N] [--warmup N] [--time-to-model]
       [--only-time-to-model]
Default: naive, packed-full, lora-fp32, default, lora-compile, lora-bf16 at 10 steps (about 7 minutes on 2
cores); time-to-model is opt-in because it takes about 14 minutes here.
Results: benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import log, machine, matmul_peaks, run_measured

ROOT = Path(__file__).resolve().parent.parent
TOUR_BASE = Path("/tmp/tour/.tweetforge/cache/base/smollm2-135m-instruct-q4_1")
BATCH = 8


# ----------------------------------------------------------------------------------------------------
# part 2: time-to-model through the CLI


def time_to_model() -> dict:
    home = Path(tempfile.mkdtemp(prefix="tweetforge-ttm-"))
    env = {**os.environ, "TWEETFORGE_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cli = str(ROOT / ".venv" / "bin" / "tweetforge")
    stages = [
        ("ingest", [cli, "ingest", "example:trump", "--json"]),
        ("dataset create", [cli, "dataset", "create", "trump-3k", "--author", "realDonaldTrump", "--limit", "3000", "--json"]),
        ("train (conversion + 2 epochs + export)", [cli, "train", "trump-3k", "--epochs", "2", "--json"]),
    ]
    results, total = [], 0.0
    log(f"time-to-model in {home}")
    for label, cmd in stages:
        wall, rss, out = run_measured(cmd, env, label)
        total += wall
        results.append({"stage": label, "seconds": round(wall, 1), "peak_rss_mib": round(rss)})
        log(f"{label}: {wall:.1f} s, peak RSS {rss:,.0f} MiB")
        if label.startswith("train"):
            summary = json.loads(out[out.index("{"):])
            results[-1]["summary"] = summary
    return {"home": str(home), "stages": results, "total_seconds": round(total, 1)}


# ----------------------------------------------------------------------------------------------------
# part 1: throughput variants


def prepare_data(work: Path) -> Path:
    """Ingest example:trump into a temporary home with tweetforge's APIs and snapshot the first 3,000
    posts; the train split's texts go to a JSON file every variant reads."""
    from tweetforge.data.ingest import ingest
    from tweetforge.data.snapshots import (
        SnapshotRequest,
        create_snapshot,
        read_snapshot,
    )
    from tweetforge.data.sources import ReadOptions, open_source
    from tweetforge.db.engine import engine_for

    home = work / "home"
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    ingest(engine, open_source("example:trump", None, ReadOptions()))
    snapshot = create_snapshot(engine, home / "datasets", SnapshotRequest("trump-3k", ("realDonaldTrump",), limit=3000))
    texts = read_snapshot(snapshot, "train")["text"].to_list()
    out = work / "train_texts.json"
    out.write_text(json.dumps(texts))
    return out


def base_dir(work: Path) -> Path:
    if (TOUR_BASE / "model.safetensors").exists():
        return TOUR_BASE
    from tweetforge.training.models.base import resolve_base

    return resolve_base("HuggingFaceTB/SmolLM2-135M", work / "cache" / "base").path


def model_flops_per_token(config, block: int, lora_params: int, full: bool) -> float:  # type: ignore[no-untyped-def]
    d, layers, inter, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    per_layer = d * d * 2 + 2 * d * kv + 3 * d * inter
    forward = 2 * (layers * per_layer + d * vocab) + 2 * layers * block * d  # causal attention, halved
    return 3 * forward if full else 2 * forward + 6 * lora_params


SETTINGS: dict[str, dict] = {
    "naive": {"naive": True, "full": True},
    "packed-full": {"full": True},
    "lora-fp32": {},
    "default": {"default": True},
    "lora-compile": {"compile": True},
    "lora-bf16": {"bf16": True},
    "lora-b128": {"block": 128},
    "lora-1thread": {"threads": 1},
    "lora-qv": {"targets": ["q_proj", "v_proj"]},
    "lora-malloc": {"env": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}},
    "default-compile": {"default": True, "compile": True},
}
"""What each variant changes from LoRA r=16 on q/k/v/o, fp32, eager, 64-token blocks, all cores. 'default' is
whatever tweetforge's TrainConfig defaults say (and train() does) at the time of the run."""


VARIANTS = tuple(SETTINGS)
DEFAULT_VARIANTS = ("naive", "packed-full", "lora-fp32", "default", "lora-compile", "lora-bf16")
"""About 7 minutes at 10 steps on 2 cores; --variants all for every one (about 13 minutes)."""


def child(variant: str, texts_path: Path, base: Path, steps: int, warmup: int) -> dict:
    import torch

    from tweetforge.training import train as tf_train
    from tweetforge.training.models import causal_lm
    from tweetforge.training.train import causal_lm_loss, encode_posts, pack

    settings = dict(SETTINGS[variant])
    if settings.get("default"):
        defaults = tf_train.TrainConfig(dataset="bench")
        settings = {"block": defaults.block_size, "compile": defaults.compile or settings.get("compile", False),
                    "bf16": tf_train.use_bf16(defaults.precision),
                    "threads": defaults.threads, "full": defaults.full}
        if hasattr(tf_train, "configure_cpu"):
            tf_train.configure_cpu(defaults)
        if hasattr(tf_train, "keep_freed_memory"):
            tf_train.keep_freed_memory()
    threads = settings.get("threads") or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    naive, full = settings.get("naive", False), settings.get("full", False)
    bf16, block = settings.get("bf16", False), settings.get("block", 64)
    if "targets" in settings:
        causal_lm.lora_targets = lambda model, *_: {"target_modules": settings["targets"]}
    texts = json.loads(texts_path.read_text())
    model, tokenizer = causal_lm.load_pretrained(base, [], None if full else causal_lm.LoraSettings(16, 32), frozen_bf16=bf16)
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in parameters)
    generator = torch.Generator().manual_seed(0)
    if naive:
        encoded = tokenizer([t + tokenizer.eos_token for t in texts], padding="max_length", truncation=True, max_length=64,
                            return_tensors="pt")
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        labels = ids.masked_fill(mask == 0, -100)
        order = torch.randperm(len(ids), generator=generator)
        optimizer = torch.optim.AdamW(parameters, lr=5e-5)

        def step(i: int) -> tuple[float, int]:
            rows = order[(i * BATCH) % len(order):][:BATCH]
            loss = model(input_ids=ids[rows], attention_mask=mask[rows], labels=labels[rows]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item(), int(mask[rows].sum())
    else:
        blocks = pack(encode_posts(tokenizer, texts, None), block)
        order = torch.randperm(len(blocks), generator=generator)
        try:
            optimizer = torch.optim.AdamW(parameters, lr=1e-3 if not full else 5e-5, fused=True)
        except (RuntimeError, TypeError):
            optimizer = torch.optim.AdamW(parameters, lr=1e-3 if not full else 5e-5)
        compiled = torch.compile(model) if settings.get("compile") else model

        def step(i: int) -> tuple[float, int]:
            batch = blocks[order[(i * BATCH) % len(order):][:BATCH]]
            loss = causal_lm_loss(compiled, batch, bf16)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item(), batch.numel()

    start = time.perf_counter()
    for i in range(warmup):
        step(i)
        log(f"  {variant}: warm-up step {i + 1}/{warmup} ({time.perf_counter() - start:.0f} s)")
    warmup_seconds = time.perf_counter() - start
    tokens, losses, start = 0, [], time.perf_counter()
    for i in range(warmup, warmup + steps):
        loss, n = step(i)
        tokens += n
        losses.append(loss)
        if (i - warmup + 1) % 5 == 0:
            log(f"  {variant}: step {i - warmup + 1}/{steps}, {tokens / (time.perf_counter() - start):.0f} tokens/s")
    seconds = time.perf_counter() - start
    config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    lora_params = 0 if full else sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)
    return {
        "variant": variant, "tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
        "warmup_seconds": warmup_seconds, "trainable_parameters": trainable, "threads": threads, "block": block,
        "last_loss": losses[-1], "flops_per_token": model_flops_per_token(config, block, lora_params, full),
    }


def throughput(variants: list[str], steps: int, warmup: int) -> dict:
    import torch

    work = Path(tempfile.mkdtemp(prefix="tweetforge-train-bench-"))
    log(f"preparing data in {work}")
    texts_path = prepare_data(work)
    base = base_dir(work)
    log("measuring matmul peaks")
    peaks = matmul_peaks(os.cpu_count() or 1)
    log(f"peaks: fp32 {peaks['float32']:.0f} GFLOP/s, bf16 {peaks['bfloat16']:.0f} GFLOP/s")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    rows = []
    for variant in variants:
        log(f"variant {variant}")
        cmd = [sys.executable, __file__, "--child", variant, "--texts", str(texts_path), "--base", str(base),
               "--steps", str(steps), "--warmup", str(warmup)]
        wall, rss, out = run_measured(cmd, {**env, **SETTINGS[variant].get("env", {})}, variant)
        row = json.loads(out.strip().splitlines()[-1])
        row["peak_rss_mib"] = rss
        row["wall_seconds"] = wall
        rows.append(row)
        log(f"{variant}: {row['tokens_per_second']:.0f} tokens/s, peak RSS {rss:,.0f} MiB")
    naive = next((r["tokens_per_second"] for r in rows if r["variant"] == "naive"), None)
    for r in rows:
        achieved = r["tokens_per_second"] * r["flops_per_token"] / 1e9
        r["gflops"] = achieved
        r["mfu_fp32"] = achieved / peaks["float32"]
        r["mfu_bf16"] = achieved / peaks["bfloat16"]
        r["vs_naive"] = r["tokens_per_second"] / naive if naive else None
    return {"machine": machine(), "torch": torch.__version__, "peaks_gflops": peaks, "steps": steps, "warmup": warmup,
            "batch": BATCH, "rows": rows}


def table(result: dict) -> str:
    lines = ["| variant | tokens/s (real) | × naive | GFLOP/s | MFU vs fp32 peak | MFU vs bf16 peak | peak RSS | warm-up |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ratio = f"{r['vs_naive']:.2f}×" if r["vs_naive"] else "–"
        lines.append(f"| {r['variant']} | {r['tokens_per_second']:,.0f} | {ratio} | {r['gflops']:.0f} | {r['mfu_fp32']:.0%} | "
                     f"{r['mfu_bf16']:.0%} | {r['peak_rss_mib']:,.0f} MiB | {r['warmup_seconds']:.0f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from {', '.join(VARIANTS)}; or 'all'")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (compile happens here)")
    parser.add_argument("--time-to-model", action="store_true", help="also run part 2 (about 14 minutes on 2 cores)")
    parser.add_argument("--only-time-to-model", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.texts, args.base, args.steps, args.warmup)))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = ROOT / "benchmarks" / ".work"
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    if not args.only_time_to_model:
        variants = list(VARIANTS) if args.variants == "all" else [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = set(variants) - set(VARIANTS)
        if unknown:
            raise SystemExit(f"unknown variants {sorted(unknown)}: choose from {', '.join(VARIANTS)}")
        result["throughput"] = throughput(variants, args.steps, args.warmup)
        peaks = result["throughput"]["peaks_gflops"]
        print(f"\n{result['throughput']['machine']}, torch {result['throughput']['torch']}; matmul peaks: "
              f"fp32 {peaks['float32']:.0f} GFLOP/s, bf16 {peaks['bfloat16']:.0f} GFLOP/s; batch {BATCH}, "
              f"{args.steps} timed steps after {args.warmup} warm-up steps\n")
        print(table(result["throughput"]))
    if args.only_time_to_model or args.time_to_model:
        result["time_to_model"] = ttm = time_to_model()
        print()
        for stage in ttm["stages"]:
            print(f"{stage['stage']}: {stage['seconds']:.1f} s, peak RSS {stage['peak_rss_mib']:,} MiB")
        summary = ttm["stages"][-1]["summary"]
        print(f"total {ttm['total_seconds']:.1f} s; validation perplexity {summary.get('metrics', {}).get('val_perplexity')}")
    (out / "train-results.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"\nfull results: {out / 'train-results.json'}")


if __name__ == "__main__":
    main()
