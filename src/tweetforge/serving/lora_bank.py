"""Many personas on one base: every LoRA adapter of a base sits in a bank beside it, and one forward pass
serves rows of different adapters. Each adapted projection keeps its base Linear and, per loaded adapter
(a slot), that adapter's A and B (its scale folded into B), zero-padded to the bank's largest rank. For
a batch whose rows use several slots, each row gathers its own A and B and two batched matmuls add its
low-rank update (the base matmul is shared by all rows); a batch of one slot takes two plain matmuls.
Slot 0 is the base itself. Adapters come and go while serving: a swap holds the bank's lock, which the
batcher holds around each forward pass, so a pass sees one consistent bank."""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tweetforge.registry.adapters import CONFIG, WEIGHTS, lora_pairs, lora_scale


class BankedLinear(torch.nn.Module):
    """A base Linear and, per slot, A as (in, rank) and B as (rank, out): laid out so that the rows a batch
    gathers are what the batched matmuls take, with no further copy."""

    def __init__(self, base: torch.nn.Linear, bank: LoraBank):
        super().__init__()
        self.base, self.bank = base, bank
        self.a = torch.zeros(bank.capacity, base.in_features, bank.rank, dtype=base.weight.dtype)
        self.b = torch.zeros(bank.capacity, bank.rank, base.out_features, dtype=base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        slot, rows = self.bank.single, self.bank.rows
        if slot is not None:
            return y if slot == 0 else y + (x @ self.a[slot]) @ self.b[slot]
        if rows is None:
            return y
        # index_select copies whole slots; advanced indexing (self.a[rows]) takes 6-8x as long on CPU
        return y + torch.bmm(torch.bmm(x, torch.index_select(self.a, 0, rows)), torch.index_select(self.b, 0, rows))

    def resize(self, capacity: int, rank: int) -> None:
        a = self.a.new_zeros(capacity, self.a.shape[1], rank)
        b = self.b.new_zeros(capacity, rank, self.b.shape[2])
        a[: self.a.shape[0], :, : self.a.shape[2]] = self.a
        b[: self.b.shape[0], : self.b.shape[1]] = self.b
        self.a, self.b = a, b


class LoraBank:
    """The adapters loaded on one base model, by slot."""

    def __init__(self, model: torch.nn.Module, capacity: int = 8, rank: int = 16):
        self.model, self.capacity, self.rank = model, capacity, rank
        self.lock = threading.Lock()
        self.modules: dict[str, BankedLinear] = {}
        self.slots: dict[int, str] = {}
        """slot -> the adapter directory it holds"""
        self.single: int | None = 0
        self.rows: torch.Tensor | None = None

    def use(self, slots: list[int]) -> None:
        """The slot of each row of the next forward pass (called with the lock held)."""
        if len(set(slots)) == 1:
            self.single, self.rows = slots[0], None
        else:
            self.single, self.rows = None, torch.tensor(slots)

    def add(self, directory: Path) -> int:
        """Load a peft adapter directory into a free slot; the pass in progress, if any, is not disturbed."""
        from safetensors.torch import load_file

        config = json.loads((directory / CONFIG).read_text())
        if config.get("rank_pattern") or config.get("alpha_pattern"):
            raise ValueError(f"{directory}: per-module ranks or alphas are not supported by the shared-base server")
        scale = lora_scale(config)
        pairs = lora_pairs(load_file(directory / WEIGHTS))
        if not pairs:
            raise ValueError(f"{directory}: no LoRA weights in {WEIGHTS}")
        for name in pairs:  # every target checked before the bank changes
            if name not in self.modules and not isinstance(self.model.get_submodule(name), torch.nn.Linear):
                raise ValueError(f"{name} is a {type(self.model.get_submodule(name)).__name__}, not a Linear layer: "
                                 "the shared-base server adapts Linear layers only")
        with self.lock:
            slot = next(s for s in range(1, len(self.slots) + 2) if s not in self.slots)
            capacity = self.capacity if slot < self.capacity else self.capacity + 8  # 9.8 MiB a slot at rank 16 (SmolLM2, top 15 layers)
            rank = max(self.rank, config["r"])
            if (capacity, rank) != (self.capacity, self.rank):
                self.capacity, self.rank = capacity, rank
                for module in self.modules.values():
                    module.resize(capacity, rank)
            for name, (a, b) in pairs.items():
                module = self.modules.get(name) or self._wrap(name)
                r = a.shape[0]
                module.a[slot].zero_()
                module.b[slot].zero_()
                module.a[slot, :, :r] = a.T.to(module.a.dtype)
                module.b[slot, :r] = (b.float() * scale).T.to(module.b.dtype)
            for name, module in self.modules.items():  # a slot reused: modules this adapter leaves alone add nothing
                if name not in pairs:
                    module.a[slot].zero_()
                    module.b[slot].zero_()
            self.slots[slot] = str(directory)
        return slot

    def _wrap(self, name: str) -> BankedLinear:
        parent_name, _, child = name.rpartition(".")
        parent = self.model.get_submodule(parent_name)
        banked = BankedLinear(getattr(parent, child), self)
        setattr(parent, child, banked)
        self.modules[name] = banked
        return banked

    def remove(self, slot: int) -> None:
        with self.lock:
            if self.slots.pop(slot, None) is not None:
                for module in self.modules.values():
                    module.a[slot].zero_()
                    module.b[slot].zero_()

    def nbytes(self) -> int:
        return sum(m.a.nbytes + m.b.nbytes for m in self.modules.values())


class AdapterView:
    """What the service holds for one adapter version: its slot in a shared batcher, with the calls of a
    Batcher (draw, submit, depth, stop, stats). Stopping frees the slot, once no request of it is in flight
    (a freed slot may hold another persona next), not the shared batcher."""

    def __init__(self, batcher: Any, bank: LoraBank, slot: int, max_new_tokens: int):
        self.batcher, self.bank, self.slot, self.max_new_tokens = batcher, bank, slot, max_new_tokens
        self._lock = threading.Lock()
        self._in_flight, self._stopping, self._removed = 0, False, False

    def submit(self, job: Any, sampling: Any, seed: int | None = None, cancelled: Any = None, streamer: Any = None) -> Future:
        from tweetforge.serving.batching import Overloaded

        limited = replace(sampling, max_tokens=min(sampling.max_tokens or self.max_new_tokens, self.max_new_tokens))
        with self._lock:
            if self._removed:
                raise Overloaded("this adapter was just unloaded; the next request loads it again")
            self._in_flight += 1
        try:
            future = self.batcher.submit(job, limited, seed, cancelled, streamer, adapter=self.slot)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)
        return future

    def draw(self, job: Any, sampling: Any, seed: int | None, cancelled: Any = None) -> Any:
        from tweetforge.serving.batching import wait_for

        return wait_for(self.submit(job, sampling, seed, cancelled), cancelled)

    def _finished(self, _future: Future | None) -> None:
        with self._lock:
            self._in_flight -= 1
            self._remove_if_idle()

    def _remove_if_idle(self) -> None:
        if self._stopping and not self._in_flight and not self._removed:
            self._removed = True
            self.bank.remove(self.slot)

    def depth(self) -> int:
        return self.batcher.depth()

    @property
    def stats(self) -> Any:
        return self.batcher.stats

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._remove_if_idle()
