"""One run on several processes: PyTorch DistributedDataParallel over the training loop, started by
torchrun (gloo on CPUs, NCCL on GPUs), and the device a run trains on.

`tweetforge train … --nproc N` launches N ranks on this host through torch.distributed's elastic
launcher (what `torchrun` runs); `torchrun --nproc-per-node N -m tweetforge train …` does the same by
hand, on several hosts too (with a shared data home). Every rank builds the same model from the same
seed, encodes every block and follows the same epoch order; of each global batch rank r takes the rows
r, r+N, r+2N, … of the batch a single process would take, so the global batch and the learning-rate
schedule are the ones asked for. Only rank 0 writes checkpoints, tracking and the registry."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from tweetforge.errors import TweetforgeError


class DistributedError(TweetforgeError):
    """A rank that failed or a device that is not there."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (one rank when not launched by torchrun)."""

    rank: int = 0
    size: int = 1
    local_size: int = 1

    @classmethod
    def from_environment(cls) -> World:
        """What torchrun sets in every rank's environment."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_WORLD_SIZE", 1)))

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch (or of the validation blocks)."""
        return rows[self.rank :: self.size]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks."""
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def from_main(self, value: Any) -> Any:
        """Rank 0's value, on every rank."""
        if not self.distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def training_device(asked: str, world: World) -> torch.device:
    """'auto': the GPU when torch sees one, else the CPU. Under torchrun each rank takes its local GPU."""
    if asked not in ("auto", "cpu", "cuda"):
        raise DistributedError(f"--device {asked!r}: use auto, cpu or cuda")
    if asked == "cpu" or (asked == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DistributedError("--device cuda: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False); "
                               "install a CUDA build of torch there, or train with --device cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    return device


def join(world: World, device: torch.device) -> None:
    """Enter the process group of a torchrun launch (once per process)."""
    if world.distributed and not torch.distributed.is_initialized():
        # a rank that stops answering fails the others within minutes, not gloo's default half hour
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=5))


def leave(world: World) -> None:
    if world.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def launch(nproc: int, arguments: list[str]) -> None:
    """Run `python -m tweetforge ARGUMENTS` as nproc ranks on this host; a rank that fails or is killed
    stops the others, and the error names it."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"tweetforge-{os.getpid()}", rdzv_backend="c10d",
                          rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)("-m", "tweetforge", *arguments)
    except ChildFailedError as exc:
        # the launcher stops the other ranks with SIGTERM: the failure to name is the one that was not that
        first = sorted(exc.failures.items(), key=lambda item: (item[1].exitcode == -signal.SIGTERM, item[1].timestamp, item[0]))
        rank, failure = first[0]
        how = (f"was killed by {signal.Signals(-failure.exitcode).name}" if failure.exitcode < 0 else f"exited with status {failure.exitcode}")
        raise DistributedError(f"training rank {rank} of {nproc} {how}; the other ranks were stopped. The run can continue from its last "
                               "checkpoint: the same command with --resume") from None
