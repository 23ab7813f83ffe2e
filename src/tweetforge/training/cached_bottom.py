"""Train the top, freeze and cache the bottom.

With LoRA adapters only on the top k decoder layers, the layers below them never change: the hidden
state a token block has when it enters the first trained layer is the same in every epoch. The first
time a block is met it runs through the bottom once (no autograd), and its hidden state is kept; after
that the block costs only the top k layers, the final norm and the LM head, forward and backward.
Validation blocks are cached the same way. Nothing is approximated: the top pass is the model's own
forward with the bottom layers removed and the cached hidden state given as input embeddings, which is
exactly what those layers would have received.

Caching needs a decoder whose layers receive only the hidden state and position information the model
computes from the sequence itself (Llama, Qwen2, Mistral, SmolLM2: rotary positions inside the layers),
and nothing trainable below the top (new control-token embeddings are trainable, so multi-author runs
train the top layers without the cache). Elsewhere the top-k adapters still train, and autograd skips
the frozen bottom in the backward pass."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def decoder_stack(model: Any) -> tuple[Any, torch.nn.ModuleList] | None:
    """(the decoder module, its layers) of a Llama-like causal LM (peft-wrapped or not), else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, torch.nn.ModuleList) and hasattr(inner, "rotary_emb") and hasattr(inner, "norm"):
        return inner, layers
    return None


def can_cache(model: Any) -> bool:
    """A Llama-like stack, and nothing trainable outside the decoder layers but the LM head's own side."""
    stack = decoder_stack(model)
    if stack is None:
        return False
    inner, _ = stack
    return not any(p.requires_grad for p in inner.embed_tokens.parameters())


@contextmanager
def only_layers(inner: Any, layers: torch.nn.ModuleList, norm: torch.nn.Module | None = None) -> Iterator[None]:
    """Run the decoder with some of its layers (and optionally another final norm) for a moment."""
    kept_layers, kept_norm = inner.layers, inner.norm
    inner.layers = layers
    if norm is not None:
        inner.norm = norm
    try:
        yield
    finally:
        inner.layers, inner.norm = kept_layers, kept_norm


class CachedBottom:
    """Hidden states of token blocks after the frozen bottom layers, computed once per block.

    A training block's state is always computed inside its batch of the first epoch (the same rows in
    the same matmuls), whether it is first met in that epoch or after a resume, so a resumed run gets the
    same numbers as an uninterrupted one."""

    def __init__(self, model: Any, bottom_layers: int, train_blocks: torch.Tensor, first_epoch_order: torch.Tensor,
                 batch_size: int, dtype: torch.dtype):
        stack = decoder_stack(model)
        assert stack is not None
        self.model, (self.inner, layers) = model, stack
        self.bottom, self.top = layers[:bottom_layers], layers[bottom_layers:]
        self.train_blocks, self.batch_size, self.dtype = train_blocks, batch_size, dtype
        self.first_epoch_order = first_epoch_order
        self.position_in_first_epoch = torch.empty_like(first_epoch_order)
        self.position_in_first_epoch[first_epoch_order] = torch.arange(len(first_epoch_order))
        n, t = train_blocks.shape
        self.hidden = torch.empty(n, t, self.inner.config.hidden_size, dtype=dtype, device=train_blocks.device)
        self.cached = torch.zeros(n, dtype=torch.bool)
        self.validation: list[torch.Tensor] = []

    @torch.inference_mode()
    def _through_bottom(self, blocks: torch.Tensor, bf16: bool) -> torch.Tensor:
        with only_layers(self.inner, self.bottom, torch.nn.Identity()), torch.autocast(blocks.device.type, dtype=torch.bfloat16, enabled=bf16):
            return self.inner(input_ids=blocks, use_cache=False).last_hidden_state.to(self.dtype)

    def _ensure(self, indices: torch.Tensor, bf16: bool) -> None:
        for first_batch in sorted({int(p) // self.batch_size for p in self.position_in_first_epoch[indices[~self.cached[indices]]]}):
            rows = self.first_epoch_order[first_batch * self.batch_size : (first_batch + 1) * self.batch_size]
            self.hidden[rows] = self._through_bottom(self.train_blocks[rows], bf16)
            self.cached[rows] = True

    def logits(self, hidden: torch.Tensor, bf16: bool) -> torch.Tensor:
        with only_layers(self.inner, self.top), torch.autocast(hidden.device.type, dtype=torch.bfloat16, enabled=bf16):
            return self.model(inputs_embeds=hidden, use_cache=False).logits

    def train_hidden(self, indices: torch.Tensor, bf16: bool) -> torch.Tensor:
        self._ensure(indices, bf16)
        return self.hidden[indices]

    def validation_hidden(self, blocks: torch.Tensor, batch_size: int, bf16: bool) -> list[torch.Tensor]:
        """The validation blocks' states, batch by batch (computed at the first evaluation)."""
        if not self.validation:
            self.validation = [self._through_bottom(blocks[s : s + batch_size], bf16) for s in range(0, len(blocks), batch_size)]
        return self.validation
