"""What every benchmark's report starts with: the machine it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_measured(cmd: list[str], env: dict[str, str], label: str, capture: bool = True) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB of the child, its stdout). Progress: a dot every 10 s on stderr."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE, text=True)
    import threading

    err_lines: list[str] = []

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            err_lines.append(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out = ""
    if capture:
        out_chunks: list[str] = []
        out_reader = threading.Thread(target=lambda: out_chunks.append(process.stdout.read()), daemon=True)  # type: ignore[union-attr]
        out_reader.start()
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.5)
        elapsed = time.perf_counter() - start
        if int(elapsed * 2) % 20 == 0:
            print(f"  … {label}: {elapsed:.0f} s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=5)
    if capture:
        out_reader.join(timeout=5)
        out = "".join(out_chunks)
    if process.returncode != 0:
        sys.stderr.write("".join(err_lines[-40:]))
        raise SystemExit(f"{label} failed with exit code {process.returncode}")
    return wall, usage.ru_maxrss / 1024, out


def matmul_peaks(threads: int) -> dict[str, float]:
    """Best GFLOP/s of a few matmuls (the model's own shapes and a large square one) in fp32 and bf16. A
    shape that would take over a second a call at the rate seen so far is skipped: bf16 without
    AVX512-BF16/AMX can run at 1 GFLOP/s, and one LM-head matmul would then take minutes."""
    import torch

    torch.set_num_threads(threads)
    shapes = ((512, 576, 1536), (512, 1536, 576), (512, 576, 49152), (2048, 2048, 2048))
    peaks = {}
    for dtype in (torch.float32, torch.bfloat16):
        best = 0.0
        for m, k, n in shapes:
            if best and 2 * m * k * n / best / 1e9 > 1.0:
                continue  # would take over a second a call at the rate seen so far
            a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
            start = time.perf_counter()
            a @ b
            first = time.perf_counter() - start
            best = max(best, 2 * m * k * n / first / 1e9)
            runs, start = 0, time.perf_counter()
            while time.perf_counter() - start < 1.0:
                a @ b
                runs += 1
            best = max(best, 2 * m * k * n * runs / (time.perf_counter() - start) / 1e9)
        peaks[str(dtype).removeprefix("torch.")] = best
    return peaks


def cpu_flags() -> str:
    """The CPU features that decide training precision here: AVX2, AVX-512, AVX512-BF16, AMX."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted)
