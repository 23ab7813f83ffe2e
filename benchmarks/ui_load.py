#!/usr/bin/env python
"""Benchmark: how long the web UI takes to load in a browser on loopback, against a bare Gradio app in the same run.

Servers, one after the other, each in its own subprocess on a free loopback port:
  tweetforge   `tweetforge serve --model REF` (the UI mounted at /, the API under /v1), TWEETFORGE_HOME=HOME.
  baseline     a FastAPI app with a bare Gradio Blocks (a heading, a textbox, a button) mounted at / the same way
               (`python benchmarks/ui_load.py --baseline-server --port P`): the framework's own floor.

Browser: Debian's chromium through playwright (executable_path=/usr/bin/chromium), headless, a new browser context
(empty cache) for every load. Per load: `goto(url, wait_until="load")`, then the page is *usable* when its main
button is enabled (tweetforge: #generate-button, which the page's load event enables once the model list has
arrived; baseline: #go). Times are from the start of goto. The first load after the server answers /readyz is
reported on its own (start-up), then the median and the slowest of --loads more.

Usage: .venv/bin/python benchmarks/ui_load.py [--home DIR] [--model REF] [--loads 10]
Measured run: --home /work/evalhome/home --model trump:1. Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from common import machine
from serve import (  # the serving benchmark's server helpers
    WORK,
    Server,
    env_for,
    log,
    pick_models,
)

CHROMIUM = "/usr/bin/chromium"


def baseline_server(port: int) -> None:
    import gradio as gr
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict:
        return {"ready": True}

    with gr.Blocks(title="baseline") as blocks:
        gr.Markdown("# A bare Gradio app")
        text = gr.Textbox(label="Text")
        gr.Button("Go", elem_id="go").click(lambda t: t, inputs=text, outputs=text)
    app = gr.mount_gradio_app(app, blocks, path="/", ssr_mode=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def measure(url: str, ready_selector: str, loads: int) -> dict:
    from playwright.sync_api import sync_playwright

    times: list[dict[str, float]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for _ in range(loads + 1):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            started = time.perf_counter()
            page.goto(url, wait_until="load", timeout=60_000)
            loaded = time.perf_counter() - started
            page.wait_for_selector(f"{ready_selector}:not([disabled])", state="visible", timeout=60_000)
            usable = time.perf_counter() - started
            times.append({"load": loaded, "usable": usable})
            context.close()
        browser.close()
    first, rest = times[0], times[1:]
    return {"first": first, "loads": rest,
            "median_load": statistics.median(t["load"] for t in rest), "median_usable": statistics.median(t["usable"] for t in rest),
            "max_usable": max(t["usable"] for t in rest)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=WORK / "serve-home")
    parser.add_argument("--model", help="a registered causal-lm version (default: the first one; made if none, as benchmarks/serve.py does)")
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        baseline_server(args.port)
        return
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    WORK.mkdir(parents=True, exist_ok=True)
    home = args.home.expanduser().resolve()
    model = pick_models(home, args.model, None, False)[0]["ref"]
    results = {}
    runs = (
        ("tweetforge", [sys.executable, "-m", "tweetforge", "serve", "--model", model], "#generate-button"),
        ("baseline", [sys.executable, str(Path(__file__).resolve()), "--baseline-server"], "#go"),
    )
    for label, cmd, selector in runs:
        server = Server(label, cmd, env_for(home), WORK / f"ui-load-{label}.log")
        try:
            results[label] = {"ready_seconds": server.start(), **measure(server.url, selector, args.loads)}
        finally:
            server.stop()
        r = results[label]
        log(f"{label}: first load after start-up {r['first']['load']:.2f} s (usable {r['first']['usable']:.2f} s); "
            f"median of {args.loads}: load {r['median_load']:.2f} s, usable {r['median_usable']:.2f} s, slowest usable {r['max_usable']:.2f} s")
    ours, base = results["tweetforge"], results["baseline"]
    print(f"\n{machine()}; chromium headless, new context per load, {args.loads} loads after the first; model {model}\n")
    print("| server | first load after start-up: load / usable s | median load s | median usable s | slowest usable s |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {r['first']['load']:.2f} / {r['first']['usable']:.2f} | {r['median_load']:.2f} | {r['median_usable']:.2f} | "
              f"{r['max_usable']:.2f} |")
    print(f"\nratio tweetforge / bare Gradio, median usable: {ours['median_usable'] / base['median_usable']:.2f}×  "
          f"(target: usable in under 2 s; tweetforge {'meets' if ours['median_usable'] < 2 and ours['first']['usable'] < 2 else 'misses'} it)")


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    main()
