"""Training, top to bottom: posts → token blocks → model → loop (eval, early stop, checkpoints) → registry.

Posts are packed with end-of-post separators into full blocks (no padding), so every token computed is
a real one; multi-author models see an author control token after each separator. One loop serves every
model kind: a pretrained causal LM with LoRA (default) or full fine-tuning, a GPT-2 from scratch, the
LSTM — each is a Hugging Face model returning logits."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from tweetforge.data.post import MAX_POST_CHARS
from tweetforge.data.snapshots import Snapshot, read_snapshot
from tweetforge.errors import TweetforgeError
from tweetforge.training.cached_bottom import CachedBottom, can_cache
from tweetforge.training.config import DEFAULT_LEARNING_RATE, TrainConfig
from tweetforge.training.distributed import World, join, leave, training_device
from tweetforge.training.models.tokenizers import author_token
from tweetforge.training.tracking import Tracker


class TrainingError(TweetforgeError):
    """A run that cannot start or continue; the message says why and what to do."""


@dataclass
class RunState:
    """What a checkpoint restores: where the loop was, and what it has seen."""

    step: int = 0
    best_val_loss: float = math.inf
    best_step: int = 0
    evals_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time in the training loop, validation included, over every session of the run."""
    evaluation_seconds: float = 0.0
    tokens: int = 0
    stopped_because: str = ""


# ---------------------------------------------------------------- data


def encode_posts(tokenizer: Any, texts: list[str], authors: list[str] | None) -> list[list[int]]:
    """Each post as [end-of-post, (author token), text tokens]: the separator before a post is what a
    prompt starts with at generation, so a generated post starts like a post."""
    eos = tokenizer.eos_token_id
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if authors is None:
        return [[eos, *t] for t in ids]
    controls = {a: tokenizer.convert_tokens_to_ids(author_token(a)) for a in set(authors)}
    return [[eos, controls[a], *t] for t, a in zip(ids, authors)]


def pack(sequences: list[list[int]], block_size: int) -> torch.Tensor:
    """Concatenate and cut into full blocks; the tail shorter than a block is dropped."""
    stream = [token for sequence in sequences for token in sequence]
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise TrainingError(f"the posts give {len(stream)} tokens, fewer than one block of {block_size}")
    return torch.tensor(stream[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)


def epoch_order(n_blocks: int, seed: int, epoch: int) -> torch.Tensor:
    """The block order of an epoch: a function of (seed, epoch) alone, so a resumed run sees the same data."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_blocks, generator=generator)


# ---------------------------------------------------------------- model


def use_bf16(precision: str, device: torch.device = torch.device("cpu")) -> bool:
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    if precision != "auto":
        raise TrainingError(f"--precision {precision!r}: use auto, bf16 or fp32")
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else bf16_matmul_is_faster()


@lru_cache(maxsize=1)
def bf16_matmul_is_faster() -> bool:
    """Measure rather than guess from CPU flags: with AMX or AVX512-BF16 a bf16 matmul is several times
    faster than fp32; without them (plain AVX-512 or AVX2) oneDNN emulates bf16 and it is several times
    slower. Costs ~0.1 s once per process."""
    a32, b32 = torch.randn(256, 576), torch.randn(576, 1536)
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = a32.to(dtype), b32.to(dtype)
        a @ b
        start = time.perf_counter()
        for _ in range(8):
            a @ b
        timings[dtype] = time.perf_counter() - start
    return timings[torch.bfloat16] < 0.8 * timings[torch.float32]


def next_token_loss(logits: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the block's B x (T-1) predictions. The targets are shifted
    instead of the logits (the last position's target is ignored), so the B x T x vocabulary logits are
    used in place rather than copied by a slice and reshape, forward and backward."""
    targets = torch.nn.functional.pad(blocks[:, 1:], (0, 1), value=-100)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100)


def causal_lm_loss(model: Any, blocks: torch.Tensor, bf16: bool) -> torch.Tensor:
    with torch.autocast(blocks.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=blocks).logits
    return next_token_loss(logits, blocks)


@torch.inference_mode()
def evaluate_loss(model: Any, blocks: torch.Tensor, batch_size: int, bf16: bool, cache: CachedBottom | None = None,
                  world: World = World()) -> float:
    """Run on the eager model even when training is compiled: evaluation's grad mode, eval() flag and
    last short batch would each make torch.compile recompile. Under DDP each rank evaluates its share of
    the blocks and the mean is taken over all of them."""
    model.eval()
    blocks = world.share(blocks)
    total, count = 0.0, 0
    hidden = cache.validation_hidden(blocks, batch_size, bf16) if cache else None
    for i, start in enumerate(range(0, blocks.shape[0], batch_size)):
        batch = blocks[start : start + batch_size]
        loss = next_token_loss(cache.logits(hidden[i], bf16), batch) if cache and hidden else causal_lm_loss(model, batch, bf16)
        total += loss.item() * batch.shape[0]
        count += batch.shape[0]
    model.train()
    total, count = world.sum([total, count])
    return total / max(count, 1)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changes: adapters for LoRA, every weight otherwise."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}


def learning_rate_at(step: int, total: int, peak: float, warmup_ratio: float, min_lr_ratio: float, budget_used: float = 0.0) -> float:
    """Linear warmup to the peak, then cosine decay to min_lr_ratio x the peak over the steps or, under a
    time budget, over whichever runs out first: the steps or the time (budget_used, the share spent).
    A run the budget stops then ends annealed, not at its peak rate."""
    warmup = max(1, int(total * warmup_ratio))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), budget_used)
    return peak * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: RunState, best: dict | None) -> None:
    """Atomic: written beside, fsynced, renamed; its sha256 goes into checkpoint.json (also renamed into
    place) so that a torn or corrupted file is detected on resume rather than silently used."""
    payload = {
        "model": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "state": asdict(state),
        "best": best,
        "rng": torch.get_rng_state(),
    }
    target, tmp = run_dir / "checkpoint.pt", run_dir / "checkpoint.pt.tmp"
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    meta = {"step": state.step, "sha256": sha256_of(target), "bytes": target.stat().st_size, "saved_at": datetime.now().isoformat()}
    (run_dir / "checkpoint.json.tmp").write_text(json.dumps(meta))
    os.replace(run_dir / "checkpoint.json.tmp", run_dir / "checkpoint.json")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    target, meta_path = run_dir / "checkpoint.pt", run_dir / "checkpoint.json"
    if not target.exists() or not meta_path.exists():
        raise TrainingError(f"{run_dir} has no complete checkpoint to resume from: start a new run without --resume")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingError(f"checkpoint record {meta_path} is corrupt ({exc}): start a new run without --resume") from None
    if sha256_of(target) != meta.get("sha256"):
        raise TrainingError(
            f"checkpoint {target} is corrupt: its sha256 does not match the one recorded at step {meta.get('step')}; "
            "it will not be used (start a new run without --resume)"
        )
    try:
        return torch.load(target, weights_only=False, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing
        raise TrainingError(f"checkpoint {target} cannot be read ({exc}): start a new run without --resume") from None


# ---------------------------------------------------------------- the run


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    model: Any
    tokenizer: Any
    state: RunState
    config: TrainConfig
    base_description: str
    authors: list[str]
    multi_author: bool
    bf16: bool
    """Whether the run trained under bf16 autocast."""
    max_post_tokens: int
    """Tokens of the longest training post that fits MAX_POST_CHARS: the generation limit."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Where this session's time went: conversion (of the base, once per machine), load, encoding,
    training, evaluation."""


ProgressCallback = Callable[[dict[str, Any]], None]


def prepare_model(config: TrainConfig, texts: list[str], control_tokens: list[str], home: Path, resolve_from: Callable[[str], Path] | None,
                  seconds: dict[str, float] | None = None, device: torch.device = torch.device("cpu")):
    """(model, tokenizer, description) for the kind of run asked for; the base conversion's time goes to
    seconds["conversion"]."""
    from tweetforge.training.models.causal_lm import build_scratch, load_pretrained

    if config.from_model:
        if resolve_from is None:
            raise TrainingError("--from needs the registry")
        directory = resolve_from(config.from_model)
        info = json.loads((directory / "tweetforge.json").read_text())
        if info["kind"] == "lstm" or info["kind"] == "scratch" or config.full:
            model, tokenizer = load_pretrained(directory, control_tokens, lora=None)
            return model, tokenizer, f"registered model {config.from_model} ({info['kind']}, full weights)"
        model, tokenizer = _load_lora(directory, control_tokens, config, device)
        return model, tokenizer, f"registered model {config.from_model} (new LoRA adapters{_on_layers(as_trained(config, model))})"
    if config.kind in ("lstm", "scratch"):
        from tweetforge.training.models.tokenizers import train_bpe_tokenizer

        tokenizer = train_bpe_tokenizer(texts, config.vocab_size, control_tokens)
        if config.kind == "scratch":
            model = build_scratch(tokenizer, config.layers, config.width, config.block_size)
            return model, tokenizer, f"GPT-2 from scratch ({config.layers} layers, {config.width} wide, BPE vocabulary {len(tokenizer)})"
        from tweetforge.training.models.lstm import (
            TweetLSTMConfig,
            TweetLSTMForCausalLM,
        )

        lstm_config = TweetLSTMConfig(
            vocab_size=len(tokenizer), embedding_size=config.width, hidden_size=2 * config.width,
            num_layers=max(1, min(config.layers, 3)),
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
        return TweetLSTMForCausalLM(lstm_config), tokenizer, (
            f"LSTM ({lstm_config.num_layers} layers, {lstm_config.hidden_size} hidden, BPE vocabulary {len(tokenizer)})"
        )
    from tweetforge.training.models.base import resolve_base

    converting = time.perf_counter()
    resolved = resolve_base(config.base, home / "cache" / "base")
    if seconds is not None:
        seconds["conversion"] = time.perf_counter() - converting
    if config.full:
        model, tokenizer = load_pretrained(resolved.path, control_tokens, None)
        return model, tokenizer, f"{resolved.describe()}, full fine-tune"
    model, tokenizer = _load_lora(resolved.path, control_tokens, config, device)
    return model, tokenizer, f"{resolved.describe()}, LoRA r={config.lora_r}{_on_layers(as_trained(config, model))}"


def _load_lora(directory: Path, control_tokens: list[str], config: TrainConfig, device: torch.device):  # type: ignore[no-untyped-def]
    from tweetforge.training.models.causal_lm import LoraSettings, load_pretrained

    try:
        return load_pretrained(directory, control_tokens, LoraSettings(config.lora_r, config.lora_alpha, top_layers=config.train_layers,
                                                                            modules=config.lora_modules),
                               frozen_bf16=use_bf16(config.precision, device))
    except ValueError as exc:
        raise TrainingError(str(exc)) from None


def as_trained(config: TrainConfig, model: Any) -> TrainConfig:
    """The config with train_layers as it applies to this model: 0 (every layer) for a run that is not
    LoRA, or when the model has no more layers than asked for."""
    from dataclasses import replace

    from tweetforge.training.models.causal_lm import top_layers

    if config.train_layers > 0 and (not hasattr(model, "peft_config") or top_layers(model, config.train_layers) is None):
        return replace(config, train_layers=0)
    return config


def _on_layers(config: TrainConfig) -> str:
    where = f" on the top {config.train_layers} layers" if config.train_layers else ""
    return where + (", MLP too" if config.lora_modules == "attention+mlp" else "")


def keep_freed_memory() -> Callable[[], None]:
    """Have glibc keep freed memory for reuse; returns the function that restores its defaults.

    By default glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh mmap and
    unmaps it on free, so each step's largest tensors (the batch x block x 49,152 logits and their
    gradient, about 100 MB each for SmolLM2) arrive as new zero-filled pages: hundreds of MB of page
    faults per step. Serving them from the heap and not trimming it lets the next step reuse the same
    pages: +10-18% tokens/s measured for LoRA on SmolLM2-135M (benchmarks/train.py, RESULTS.md). Linux with
    glibc only; elsewhere a no-op."""
    import ctypes
    import platform
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return lambda: None
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    m_trim_threshold, m_mmap_max = -1, -4
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 2**31 - 1)

    def restore() -> None:
        mallopt(m_mmap_max, 65536)
        mallopt(m_trim_threshold, 128 * 1024)
        malloc_trim(0)

    return restore


def configure_cpu(config: TrainConfig, world: World = World()) -> None:
    """Process-wide settings a run uses (benchmarks/train.py calls it too, to measure what train() does).
    The ranks on one host split its cores."""
    torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // world.local_size))


@dataclass
class TrainingPosts:
    """A snapshot's train and validation posts, and who wrote them."""

    texts: list[str]
    authors: list[str]
    """Author of each training post."""
    validation_texts: list[str]
    validation_authors: list[str]
    writers: list[str]
    """Every author of the train split, sorted."""

    @property
    def multi_author(self) -> bool:
        return len(self.writers) > 1

    @property
    def control_tokens(self) -> list[str]:
        return [author_token(a) for a in self.writers] if self.multi_author else []


def read_training_posts(snapshot: Snapshot) -> TrainingPosts:
    train_posts, validation_posts = read_snapshot(snapshot, "train"), read_snapshot(snapshot, "validation")
    if train_posts.height == 0:
        raise TrainingError(f"dataset {snapshot.name} has no training posts")
    authors = train_posts["author"].to_list()
    return TrainingPosts(train_posts["text"].to_list(), authors, validation_posts["text"].to_list(), validation_posts["author"].to_list(),
                         sorted(set(authors), key=str.lower))


@dataclass
class Blocks:
    train: torch.Tensor
    validation: torch.Tensor | None
    """None when the validation split is empty or shorter than one block."""
    max_post_tokens: int
    """Tokens of the longest training post that fits MAX_POST_CHARS: the generation limit."""


def prepare_blocks(config: TrainConfig, tokenizer: Any, posts: TrainingPosts, dataset: str, device: torch.device = torch.device("cpu")) -> Blocks:
    """Both splits encoded and packed into blocks of config.block_size tokens, on the training device."""
    sequences = encode_posts(tokenizer, posts.texts, posts.authors if posts.multi_author else None)
    train_blocks = pack(sequences, config.block_size)
    if len(train_blocks) < config.batch_size:
        raise TrainingError(
            f"dataset {dataset} gives {len(train_blocks)} training blocks of {config.block_size} tokens, fewer than one "
            f"batch of {config.batch_size}: import more posts or lower --batch-size"
        )
    validation = None
    if posts.validation_texts:
        try:
            encoded = encode_posts(tokenizer, posts.validation_texts, posts.validation_authors if posts.multi_author else None)
            validation = pack(encoded, config.block_size)[: config.eval_blocks]
        except TrainingError:
            validation = None
    prefix = 2 if posts.multi_author else 1
    fitting = [len(s) - prefix for s, t in zip(sequences, posts.texts) if len(t) <= MAX_POST_CHARS] or [len(s) - prefix for s in sequences]
    return Blocks(train_blocks.to(device), validation.to(device) if validation is not None else None, max(fitting))


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, fused where this torch build has it."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)


@dataclass(frozen=True)
class Schedule:
    steps_per_epoch: int
    total_steps: int
    peak_lr: float

    @classmethod
    def of(cls, config: TrainConfig, train_blocks: int) -> Schedule:
        steps_per_epoch = math.ceil(train_blocks / config.batch_size)
        total = max(1, math.ceil(config.epochs * steps_per_epoch))
        return cls(steps_per_epoch, min(total, config.max_steps) if config.max_steps else total,
                   config.learning_rate or DEFAULT_LEARNING_RATE[config.method])

    def learning_rate(self, state: RunState, config: TrainConfig) -> float:
        budget_used = state.seconds / (config.max_minutes * 60) if config.max_minutes else 0.0
        return learning_rate_at(state.step, self.total_steps, self.peak_lr, config.warmup_ratio, config.min_lr_ratio, budget_used)


@dataclass
class Run:
    run_id: str
    run_dir: Path
    state: RunState
    best: dict[str, torch.Tensor] | None
    """The trainable weights at the best validation loss so far."""
    started: float = field(default_factory=time.perf_counter)
    """When train() was called (perf_counter): history rows record the wall time since."""


def open_run(config: TrainConfig, snapshot: Snapshot, home: Path, *, run_dir: Path | None, resume: bool, model: torch.nn.Module,
             optimizer: torch.optim.Optimizer, world: World = World()) -> Run:
    """A new run directory under home/runs, or (resume) the interrupted one restored from its checkpoint
    (on every rank: rank 0 names and creates the directory)."""
    state, best = RunState(), None
    run_id = run_dir.name if run_dir else world.from_main(f"{config.model_name}-{datetime.now():%Y%m%d-%H%M%S}-{os.urandom(2).hex()}")
    run_dir = run_dir or home / "runs" / run_id
    if resume:
        checkpoint = load_checkpoint(run_dir)
        missing = model.load_state_dict(checkpoint["model"], strict=False)
        if missing.unexpected_keys:
            raise TrainingError(f"checkpoint in {run_dir} does not fit this model (unexpected {missing.unexpected_keys[:3]})")
        optimizer.load_state_dict(checkpoint["optimizer"])
        state, best = RunState(**checkpoint["state"]), checkpoint["best"]
        torch.set_rng_state(checkpoint["rng"])
    elif world.main:
        run_dir.mkdir(parents=True, exist_ok=False)
    if world.main:
        (run_dir / "config.json").write_text(json.dumps({**asdict(config), "snapshot_hash": snapshot.content_hash}, indent=2))
        (run_dir / "status").write_text("running")
    world.barrier()
    return Run(run_id, run_dir, state, best)


def tracked_config(config: TrainConfig, snapshot: Snapshot, description: str, blocks: Blocks, model: torch.nn.Module, bf16: bool) -> dict[str, Any]:
    """What the tracker records about a run, beside its metrics."""
    return {
        **asdict(config),
        "dataset_hash": snapshot.content_hash,
        "base_description": description,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "train_blocks": len(blocks.train),
        "train_tokens_per_epoch": blocks.train.numel(),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "bf16": bf16,
    }


def should_evaluate(state: RunState, config: TrainConfig, total_steps: int, out_of_time: bool) -> bool:
    """Every eval_every steps, at the last step, and when the time budget ends the run."""
    return state.step % config.eval_every == 0 or state.step == total_steps or out_of_time


def stop_reason(state: RunState, config: TrainConfig, out_of_time: bool) -> str:
    if state.evals_without_improvement >= config.patience:
        return f"early stop: no validation improvement in {config.patience} evaluations"
    if out_of_time:
        return f"time budget of {config.max_minutes:g} minutes reached"
    return ""


def cache_bottom(config: TrainConfig, model: torch.nn.Module, blocks: Blocks, bf16: bool) -> CachedBottom | None:
    """The frozen bottom's outputs, cached, when only the top layers train and the architecture allows it."""
    if not config.train_layers or config.compile or not can_cache(model):
        return None
    from tweetforge.training.models.causal_lm import decoder_layer_count

    bottom = decoder_layer_count(model) - config.train_layers  # as_trained left fewer than the model has
    return CachedBottom(model, bottom, blocks.train, epoch_order(len(blocks.train), config.seed, 0), config.batch_size,
                        torch.bfloat16 if bf16 else torch.float32)


class BatchLoss(torch.nn.Module):
    """The mean loss of a batch's rows, whichever way it is computed (the model, or the top layers over the
    cached bottom): one module, so that DDP wraps either."""

    def __init__(self, model: torch.nn.Module, compiled: Any, cache: CachedBottom | None, batch_size: int, bf16: bool):
        super().__init__()
        self.model, self.cache, self.batch_size, self.bf16 = model, cache, batch_size, bf16
        self.__dict__["compiled"] = compiled  # the same parameters: not a second submodule

    def forward(self, blocks: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        batch = blocks[indices]
        if self.cache is not None:
            return next_token_loss(self.cache.logits(self.cache.train_hidden(indices, self.bf16), self.bf16), batch)
        # an epoch's last short batch runs eager rather than triggering a recompile for its shape
        return causal_lm_loss(self.compiled if len(batch) == self.batch_size else self.model, batch, self.bf16)


def train_loop(config: TrainConfig, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, blocks: Blocks, schedule: Schedule,
               run: Run, tracker: Tracker, bf16: bool, report: Callable[[dict[str, Any]], None], cache: CachedBottom | None = None,
               world: World = World()) -> None:
    """Steps until the schedule, the patience or the time budget ends the run; checkpoints on the way (rank 0)."""
    state = run.state
    parameters = [p for p in model.parameters() if p.requires_grad]
    batch_loss: torch.nn.Module = BatchLoss(model, torch.compile(model) if config.compile else model, cache, config.batch_size, bf16)
    if world.distributed:
        batch_loss = torch.nn.parallel.DistributedDataParallel(batch_loss)
    model.train()
    budget = config.max_minutes * 60 if config.max_minutes else None
    session_start, session_tokens, seconds_before = time.perf_counter(), 0, state.seconds
    while state.step < schedule.total_steps and not state.stopped_because:  # a resumed run that had ended: nothing to train
        epoch, offset = divmod(state.step, schedule.steps_per_epoch)
        order = epoch_order(len(blocks.train), config.seed, epoch)
        indices = order[offset * config.batch_size : (offset + 1) * config.batch_size]
        mine = world.share(indices)
        for group in optimizer.param_groups:
            group["lr"] = schedule.learning_rate(state, config)
        # DDP averages the ranks' gradients; weighting each rank by its share of the rows makes that the
        # gradient of the global batch's mean, also for a last batch the ranks split unevenly
        loss = batch_loss(blocks.train, mine) * (len(mine) * world.size / len(indices))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        tokens = len(indices) * blocks.train.shape[1]
        state.tokens += tokens
        session_tokens += tokens
        elapsed = time.perf_counter() - session_start
        state.seconds = seconds_before + elapsed
        tokens_per_second = session_tokens / max(elapsed, 1e-9)
        # one exchange a step: the global loss, and whether any rank's clock ran out (all stop together)
        loss_sum, late = world.sum([loss.item(), float(budget is not None and state.seconds >= budget)])
        train_loss, out_of_time = loss_sum / world.size, late > 0
        metrics = {"train/loss": train_loss, "train/tokens_per_second": tokens_per_second, "train/lr": optimizer.param_groups[0]["lr"]}

        if blocks.validation is not None and should_evaluate(state, config, schedule.total_steps, out_of_time):
            evaluating = time.perf_counter()
            val_loss = evaluate_loss(model, blocks.validation, config.batch_size, bf16, cache, world)
            state.evaluation_seconds += time.perf_counter() - evaluating
            metrics.update({"eval/loss": val_loss, "eval/perplexity": math.exp(min(val_loss, 50))})
            state.history.append({"step": state.step, "train_loss": train_loss, "val_loss": val_loss, "lr": metrics["train/lr"],
                                  "seconds": state.seconds, "wall": time.perf_counter() - run.started})
            if val_loss < state.best_val_loss - 1e-4:
                state.best_val_loss, state.best_step, state.evals_without_improvement = val_loss, state.step, 0
                run.best = trainable_state(model)
            else:
                state.evals_without_improvement += 1
        tracker.log(metrics, step=state.step)
        report({"phase": "step", "loss": train_loss, "val_loss": metrics.get("eval/loss"), "tokens_per_second": tokens_per_second})

        state.stopped_because = stop_reason(state, config, out_of_time)
        if world.main and (state.step % config.checkpoint_every == 0 or state.stopped_because):
            save_checkpoint(run.run_dir, model, optimizer, state, run.best)
        if state.stopped_because:
            break
    state.stopped_because = state.stopped_because or f"finished {schedule.total_steps} steps"


def finish(model: torch.nn.Module, optimizer: torch.optim.Optimizer, run: Run, tracker: Tracker, world: World = World()) -> None:
    """End on the best validated weights, checkpoint them, close the tracker, mark the run finished."""
    state = run.state
    if run.best is not None and state.best_step != state.step:
        model.load_state_dict(run.best, strict=False)
    if world.main:
        save_checkpoint(run.run_dir, model, optimizer, state, run.best)
    tracker.log({"final/best_val_loss": state.best_val_loss if run.best is not None else float("nan"), "final/peak_rss_mb": _peak_rss_mb(),
                 "final/tokens": state.tokens}, step=state.step)
    tracker.finish()
    if world.main:
        (run.run_dir / "status").write_text("finished")


def train(config: TrainConfig, snapshot: Snapshot, home: Path, *, run_dir: Path | None = None, resume: bool = False,
          progress: ProgressCallback | None = None, resolve_from: Callable[[str], Path] | None = None) -> TrainResult:
    """Train on a snapshot's train split, evaluating on its validation split. With resume, run_dir holds
    the interrupted run, whose saved config wins. Launched by torchrun, this process is one rank of the
    run (training/distributed.py); the model comes back on the CPU, ready to export."""
    started = time.perf_counter()
    seconds: dict[str, float] = {"conversion": 0.0}
    restore_allocator = keep_freed_memory()
    world = World.from_environment()
    try:
        device = training_device(config.device, world)
        join(world, device)
        configure_cpu(config, world)
        torch.manual_seed(config.seed)
        posts = read_training_posts(snapshot)
        model, tokenizer, description = prepare_model(config, posts.texts, posts.control_tokens, home, resolve_from, seconds, device)
        model.to(device)
        config = as_trained(config, model)
        seconds["load"] = time.perf_counter() - started - seconds["conversion"]
        encoding = time.perf_counter()
        blocks = prepare_blocks(config, tokenizer, posts, snapshot.name, device)
        seconds["encoding"] = time.perf_counter() - encoding
        schedule = Schedule.of(config, len(blocks.train))
        optimizer = make_optimizer(model, schedule.peak_lr, config.weight_decay)
        run = open_run(config, snapshot, home, run_dir=run_dir, resume=resume, model=model, optimizer=optimizer, world=world)
        run.started = started
        bf16 = use_bf16(config.precision, device)
        tracked = tracked_config(config, snapshot, description, blocks, model, bf16) | {"ranks": world.size, "device": str(device)}
        tracker = Tracker(config.report_to if world.main else "none", home, run.run_id, tracked, resume=resume)

        def report(event: dict[str, Any]) -> None:
            if progress and world.main:
                progress({"step": run.state.step, "total_steps": schedule.total_steps, **event})

        report({"phase": "start", "description": description + (f", {world.size} ranks" if world.distributed else "")
                + (f", on {device}" if device.type != "cpu" else "")})
        cache = cache_bottom(config, model, blocks, bf16)
        looping, evaluation_before = time.perf_counter(), run.state.evaluation_seconds
        train_loop(config, model=model, optimizer=optimizer, blocks=blocks, schedule=schedule, run=run, tracker=tracker, bf16=bf16, report=report,
                   cache=cache, world=world)
        evaluated = run.state.evaluation_seconds - evaluation_before
        seconds |= {"training": time.perf_counter() - looping - evaluated, "evaluation": evaluated}
        finish(model, optimizer, run, tracker, world)
        model.to("cpu")
        report({"phase": "done", "stopped_because": run.state.stopped_because})
        return TrainResult(run_id=run.run_id, run_dir=run.run_dir, model=model, tokenizer=tokenizer, state=run.state, config=config,
                           base_description=description, authors=posts.writers, multi_author=posts.multi_author, bf16=bf16,
                           max_post_tokens=blocks.max_post_tokens, seconds=seconds)
    finally:
        leave(world)
        restore_allocator()


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def find_resumable_run(home: Path, model_name: str, registered: Collection[str] = ()) -> Path:
    """The newest run of model_name that was interrupted, or that finished but is not among the registered
    run ids (its registration failed: a full disk, a kill); resuming the latter only registers it."""
    own = re.compile(rf"^{re.escape(model_name)}-\d{{8}}-\d{{6}}-[0-9a-f]{{4}}$")  # not another name's runs
    runs = sorted((p for p in (home / "runs").glob("*") if own.match(p.name)), key=lambda p: p.stat().st_mtime, reverse=True)
    for run in runs:
        if (run / "status").exists() and ((run / "status").read_text() != "finished" or run.name not in registered):
            return run
    raise TrainingError(f"no interrupted or unregistered run of {model_name} to resume under {home / 'runs'}")


def saved_config(run_dir: Path) -> TrainConfig:
    """The config an interrupted run was started with (resuming continues it, whatever else is asked)."""
    path = run_dir / "config.json"
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{run_dir} is not a training run to resume ({path}: {exc})") from None
