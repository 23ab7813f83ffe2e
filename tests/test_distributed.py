"""Training on several processes (DDP over gloo, launched through torchrun's elastic launcher): two ranks
reach the weights one process reaches with the same global batch, for LoRA over the cached bottom and for
a multi-author full fine-tune; a killed rank stops the run with an error naming it, and --resume finishes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli
from tweetforge.registry.versions import resolve

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend")


def train_args(base: Path, dataset: str, name: str, *extra: str) -> list[str]:
    # batch 7 splits 4 + 3 over two ranks: the weighting of unequal shares is exercised at every step
    return ["train", dataset, "--base", str(base), "--name", name, "--batch-size", "7", "--block-size", "32", "--eval-every", "5",
            "--checkpoint-every", "5", "--precision", "fp32", "--report-to", "none", "--seed", "3", "--device", "cpu", *extra]


def weights(engine, ref: str) -> dict[str, torch.Tensor]:
    return load_file(resolve(engine, ref).path / "model.safetensors")


@pytest.mark.parametrize(("dataset", "method"), [("trump-v1", ["--train-layers", "2", "--learning-rate", "3e-3"]),
                                                 ("both-v1", ["--full", "--learning-rate", "1e-3"])],
                         ids=["lora-cached-bottom", "full-multi-author"])
def test_two_ranks_reach_the_weights_of_one_process(tiny_llama, store, dataset, method):
    home, engine, _, _ = store
    name = f"ddp-{method[0].strip('-')}"
    one = run_cli(home, *train_args(tiny_llama, dataset, f"{name}-one", "--max-steps", "12", *method, "--json"), in_subprocess=True)
    two = run_cli(home, *train_args(tiny_llama, dataset, f"{name}-two", "--max-steps", "12", "--nproc", "2", *method, "--json"),
                  in_subprocess=True)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    single, double = json.loads(one.stdout), json.loads(two.stdout)
    assert single["metrics"]["steps"] == double["metrics"]["steps"] == 12
    assert single["metrics"]["train_tokens"] == double["metrics"]["train_tokens"]  # the same global batches
    assert double["metrics"]["val_loss"] == pytest.approx(single["metrics"]["val_loss"], abs=1e-4)
    a, b = weights(engine, single["ref"]), weights(engine, double["ref"])
    base = load_file(tiny_llama / "model.safetensors")
    assert a.keys() == b.keys()
    moved = 0
    for key in a:
        # the ranks sum in another order: ~1e-6 apart, and Adam can stretch that on an almost-zero gradient
        # (one embedding entry in 128,128 by 1.2e-5); an update is ~1e-3 per step
        assert torch.allclose(a[key], b[key], atol=1e-4), key
        if key in base and base[key].shape == a[key].shape:
            moved += int((a[key] - base[key]).abs().max() > 1e-3)
    assert moved >= 4  # training changed the weights both runs agree on
    assert double["kind"] == single["kind"]


def rank_pids(launcher: int) -> dict[int, int]:
    """rank -> pid of the launcher's rank processes (from their environment)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            environ = dict(item.split("=", 1) for item in (proc / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
        except (OSError, StopIteration, ValueError):
            continue
        if parent == launcher and "RANK" in environ:
            found[int(environ["RANK"])] = int(proc.name)
    return found


def test_a_killed_rank_stops_the_run_with_its_name_and_resume_finishes_it(tiny_llama, store):
    home, engine, _, _ = store
    args = train_args(tiny_llama, "trump-v1", "ddp-killed", "--max-steps", "400", "--patience", "1000", "--train-layers", "2",
                      "--nproc", "2")
    env = {**os.environ, "TWEETFORGE_HOME": str(home), "COLUMNS": "200"}
    env.pop("TWEETFORGE_DATABASE_URL", None)
    launcher = subprocess.Popen([sys.executable, "-m", "tweetforge", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=home.parent)
    deadline = time.monotonic() + 120
    checkpoint = None
    while time.monotonic() < deadline and checkpoint is None:
        checkpoint = next((p for p in (home / "runs").glob("ddp-killed-*/checkpoint.json")), None)
        time.sleep(0.02)
    assert checkpoint is not None, "no checkpoint was written"
    ranks = rank_pids(launcher.pid)
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[1], signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 1
    assert "training rank 1 of 2 was killed by SIGKILL" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr.split("training rank 1")[-1]
    assert (checkpoint.parent / "status").read_text() == "running"
    step = json.loads(checkpoint.read_text())["step"]
    assert 5 <= step < 400

    resumed = run_cli(home, *args, "--resume", "--json", in_subprocess=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming run {checkpoint.parent.name}" in resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["metrics"]["steps"] == 400
    assert (checkpoint.parent / "status").read_text() == "finished"


def test_asking_for_a_gpu_on_a_machine_without_one_is_one_clear_line(tiny_llama, store):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    home, _, _, _ = store
    refused = run_cli(home, *train_args(tiny_llama, "trump-v1", "ddp-gpu", "--max-steps", "2", "--device", "cuda"), check=False)
    assert refused.returncode == 1
    assert "--device cuda: torch sees no CUDA GPU on this machine" in refused.stderr and "Traceback" not in refused.stderr
    assert not list((home / "runs").glob("ddp-gpu-*"))
