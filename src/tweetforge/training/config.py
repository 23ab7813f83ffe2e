"""What a training run is asked to do: TrainConfig and its defaults. No torch here, so the command line
can show the defaults without loading it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from tweetforge.training.models.base import DEFAULT_BASE

KINDS = ("pretrained", "scratch", "lstm")
DEFAULT_LEARNING_RATE = {"lora": 3e-3, "full": 5e-5, "scratch": 1e-3, "lstm": 2e-3}


@dataclass
class TrainConfig:
    dataset: str
    name: str | None = None
    """Registry name; default: the dataset name without a trailing -vN."""
    base: str = DEFAULT_BASE
    """A hub id or local directory, or 'lstm' or 'scratch'."""
    from_model: str | None = None
    """Continue training a registered version (name:version) on this dataset."""
    full: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_modules: str = "attention+mlp"
    """'attention' (q/k/v/o) or 'attention+mlp' (the MLP's projections too)."""
    train_layers: int = 15
    """LoRA: adapters on the top N decoder layers only (0, or a model with no more: every layer), the
    bottom frozen and, where the architecture allows, its outputs computed once and cached. With the
    learning rate and lora_modules, benchmarks/time_to_quality.py's best measured recipe."""
    layers: int = 4
    width: int = 256
    vocab_size: int = 8000
    block_size: int = 64
    batch_size: int = 8
    learning_rate: float | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    max_minutes: float | None = None
    """Time budget of the training loop, validation included: the cosine decay ends when the steps or the
    budget run out, whichever is first, and the run stops there and is registered."""
    warmup_ratio: float = 0.05
    """Share of the steps over which the learning rate rises linearly to its peak."""
    min_lr_ratio: float = 0.1
    """Where the cosine decay ends, as a share of the peak learning rate."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm."""
    eval_every: int = 50
    eval_blocks: int = 256
    patience: int = 3
    checkpoint_every: int = 50
    seed: int = 42
    precision: str = "auto"
    """'bf16' (autocast), 'fp32', or 'auto': bf16 where a measured bf16 matmul beats fp32 (AMX, AVX512-BF16)."""
    compile: bool = False
    threads: int | None = None
    device: str = "auto"
    """'auto' (the GPU when torch sees one), 'cpu' or 'cuda'."""
    report_to: str = "trackio"

    @property
    def kind(self) -> str:
        if self.base == "lstm":
            return "lstm"
        if self.base == "scratch":
            return "scratch"
        return "pretrained"

    @property
    def method(self) -> str:
        if self.kind != "pretrained":
            return self.kind
        return "full" if self.full else "lora"

    @property
    def model_name(self) -> str:
        if self.name:
            return self.name
        head, sep, tail = self.dataset.rpartition("-v")
        return head if sep and tail.isdigit() and head else self.dataset

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A saved run's config; runs saved before warmup_ratio was named so kept theirs as 'warmup'."""
        known = {f.name for f in fields(cls)}
        renamed = {"warmup_ratio": data["warmup"]} if "warmup" in data and "warmup_ratio" not in data else {}
        # runs saved before the top-layer recipe trained every layer's attention
        renamed |= {"train_layers": 0} if "train_layers" not in data else {}
        renamed |= {"lora_modules": "attention"} if "lora_modules" not in data else {}
        return cls(**{k: v for k, v in {**data, **renamed}.items() if k in known})
