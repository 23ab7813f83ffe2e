"""Continuous batching for transformer models: the batch is re-formed at every decoding step, not per
generate() call. A static batch runs until its longest post ends, while most of its rows have long
finished (posts average ~17 tokens, the longest in a batch of 16 often 60+); here a finished post
leaves at once, its client gets its answer, and a waiting request joins at the next step.

One decoding step feeds each active row the token it sampled last, with the key/value cache of all
rows left-padded to one length (the attention mask hides the padding, the position ids count each
row's own tokens). A joining request with a short prompt is fed its prompt in that same step, its
cache starting as padding; a long prompt is prefilled on its own and its cache padded into the batch's.
Each row samples with its own request's temperature, top-k, top-p and repetition penalty, in the
order transformers' generate() applies them. A request whose client went away leaves mid-post.
Requests with a seed run alone through generate(), so the same seed gives the same posts as
`tweetforge generate --seed`."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from tweetforge.generation.generate import (
    GenerationError,
    Sampling,
    encode_job,
    finish_sample,
    left_padded,
    new_token_budget,
    pad_token,
    stop_tokens,
)
from tweetforge.serving.batching import Batcher, ClientGone, Request

FUSED_PROMPT_TOKENS = 8
"""A joining row whose prompt (with its prefix) is at most this long is fed in the batch's next decoding
step instead of a prefill pass of its own: a pass costs about as much for 1 row as for 16 on a CPU.
Longer prompts are prefilled apart, since every row in the step would be padded to their length."""


@dataclass
class Row:
    """One post being written: its request, its tokens so far (prompt and new), and when it must stop."""

    request: Request
    prompt_ids: list[int]
    budget: int
    stop: frozenset[int]
    new: list[int] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return bool(self.new) and (self.new[-1] in self.stop or len(self.new) >= self.budget)


@dataclass
class Pending:
    """A request's finished posts, answered when the last of its n rows ends."""

    rows_left: int
    samples: list = field(default_factory=list)


def pad_left(tensor: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


CANDIDATES = 8192
"""Tokens a row's nucleus is first looked for in: a top-k instead of a sort of the whole vocabulary
(sorting 49,152 probabilities for 16 rows takes 32 ms, a third of the model's forward pass; this top-k
11 ms). A fine-tuned SmolLM2's top-p 0.95 nucleus needs more than 1,024 tokens for 46% of the steps,
more than 8,192 for 0.2% (measured on trump:1); such a row is sorted in full, so the sampled
distribution is exact either way."""


def nucleus(probs: torch.Tensor, settings: list[Sampling], vocabulary: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, closed): `probs`, the most probable of a vocabulary in descending order, cut to each
    row's top-k, renormalized, then cut to the smallest prefix reaching its top-p (transformers' order).
    `closed` says whether the prefix was decided within these columns."""
    width = probs.shape[-1]
    rank = torch.arange(width)
    top_k = torch.tensor([[s.top_k or 0] for s in settings])
    limited = top_k > 0
    within = limited & (top_k <= width)
    weights = probs.masked_fill(within & (rank >= top_k), 0.0)
    weights = weights / torch.where(within, weights.sum(-1, keepdim=True), torch.ones_like(weights[:, :1]))
    top_p = torch.tensor([[s.top_p if s.top_p < 1 else float("inf")] for s in settings])
    before = weights.cumsum(dim=-1) - weights
    closed = (within | (before[:, -1:] + weights[:, -1:] >= top_p)) & ~(limited & ~within) | (width >= vocabulary)
    return weights.masked_fill(before >= top_p, 0.0), closed.squeeze(1)


def next_tokens(logits: torch.Tensor, rows: list[Row], generator: torch.Generator) -> torch.Tensor:
    """One token per row, sampled from its logits with the row's own settings: repetition penalty,
    temperature, top-k, top-p, as transformers' generate() applies them."""
    logits = logits.float()
    for i, row in enumerate(rows):
        penalty = row.request.sampling.repetition_penalty
        if penalty != 1.0:
            seen = torch.tensor(row.prompt_ids + row.new)
            scores = logits[i, seen]
            logits[i, seen] = torch.where(scores < 0, scores * penalty, scores / penalty)
    settings = [row.request.sampling for row in rows]
    probs = (logits / torch.tensor([[s.temperature] for s in settings])).softmax(dim=-1)
    top, index = probs.topk(min(CANDIDATES, probs.shape[-1]), dim=-1)
    weights, closed = nucleus(top, settings, probs.shape[-1])
    tokens = index.gather(1, torch.multinomial(weights, 1, generator=generator)).squeeze(1)
    for i in (~closed).nonzero().flatten().tolist():
        full, order = probs[i : i + 1].sort(dim=-1, descending=True)
        weights, _ = nucleus(full, settings[i : i + 1], probs.shape[-1])
        tokens[i] = order[0, torch.multinomial(weights, 1, generator=generator)[0, 0]]
    return tokens


class ContinuousBatcher(Batcher):
    """Same queue, interface and statistics as Batcher; `stats.batches` counts decoding steps and
    `stats.posts` the rows they carried, so posts / batches is the mean batch occupancy."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.generator = torch.Generator().manual_seed(random.getrandbits(63))
        self.rows: list[Row] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.pending: dict[int, Pending] = {}
        super().__init__(*args, **kwargs)

    def depth(self) -> int:
        return super().depth() + len({id(r.request) for r in self.rows})

    # ------------------------------------------------------------ scheduling

    def _run(self) -> None:
        while not (self._stopped.is_set() and self._held is None and self.queue.empty() and not self.rows):
            joining = self._admit()
            try:
                with torch.no_grad():
                    rows = self._rows_of(joining)
                    self._prefill([r for r in rows if len(r.prompt_ids) > FUSED_PROMPT_TOKENS])
                    self._leave()
                    short = [r for r in rows if len(r.prompt_ids) <= FUSED_PROMPT_TOKENS]
                    if self.rows or short:
                        self._step(short)
                        self._leave()
            except Exception as exc:  # noqa: BLE001 - every request in the batch gets the failure; the batcher goes on
                self._fail(joining, exc)

    def _fail(self, joining: list[Request], exc: Exception) -> None:
        affected = {id(r.request): r.request for r in self.rows} | {id(r): r for r in joining}
        for request in affected.values():
            if not request.future.done():
                request.fail(exc)
        self.rows, self.cache, self.mask, self.pending = [], None, None, {}

    def _admit(self) -> list[Request]:
        """Waiting requests that fit in the batch now; when idle, wait a little for the first one. A seeded
        request (or one wanting more posts than a batch holds) waits until the batch is empty, then runs alone."""
        joining: list[Request] = []
        room = self.max_batch - len(self.rows)
        while room > 0:
            idle = not self.rows and not joining
            request = self._next(timeout=0.2 if idle else 0)
            if request is None:
                break
            if request.seed is not None or request.job.n > room:
                if idle:
                    self._run_alone(request)
                    return []
                self._held = request
                break
            if request.future.set_running_or_notify_cancel():
                joining.append(request)
                room -= request.job.n
        return joining

    def _run_alone(self, request: Request) -> None:
        if request.future.set_running_or_notify_cancel():
            self._serve([request])

    # ------------------------------------------------------------ the batch

    def _rows_of(self, requests: list[Request]) -> list[Row]:
        rows: list[Row] = []
        for request in requests:
            try:
                ids = encode_job(self.tokenizer, request.job)
                budget = new_token_budget(self.model, len(ids), self.max_new_tokens, request.sampling)
            except GenerationError as exc:
                request.fail(exc)
                continue
            self.pending[id(request)] = Pending(request.job.n)
            stop = frozenset(stop_tokens(self.tokenizer, request.sampling))
            rows += [Row(request, ids, budget, stop) for _ in range(request.job.n)]
            if request.streamer is not None:
                request.streamer.put(torch.tensor([ids]))  # the prompt, as generate() sends it first (skip_prompt drops it)
        return rows

    def _prefill(self, rows: list[Row]) -> None:
        """Long prompts: prefilled together on their own, their cache padded into the batch's."""
        from transformers import DynamicCache

        if not rows:
            return
        input_ids, mask = left_padded([r.prompt_ids for r in rows], pad_token(self.tokenizer))
        width = input_ids.shape[1]
        started = time.perf_counter()
        with self.adapters([r.request.adapter for r in rows]):
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                             past_key_values=DynamicCache(config=self.model.config), use_cache=True, logits_to_keep=1)
        self._sample(rows, out.logits[:, -1, :], time.perf_counter() - started)
        cache = out.past_key_values
        if self.cache is None:
            self.cache, self.mask, self.rows = cache, mask, rows
            return
        length = max(self.mask.shape[1], width)
        for old, new in zip(self.cache.layers, cache.layers):
            old.keys = torch.cat([pad_left(old.keys, length - self.mask.shape[1], 2), pad_left(new.keys, length - width, 2)])
            old.values = torch.cat([pad_left(old.values, length - self.mask.shape[1], 2), pad_left(new.values, length - width, 2)])
        self.mask = torch.cat([pad_left(self.mask, length - self.mask.shape[1], 1), pad_left(mask, length - width, 1)])
        self.rows += rows

    def _step(self, joining: list[Row]) -> None:
        """One forward pass: every row in the batch is fed the token it sampled last, and rows joining with a
        short prompt are fed their prompt in the same pass (the others' inputs are padded on the left to
        its length; their cache starts empty, all padding). Each row then samples its next token."""
        from transformers import DynamicCache

        input_ids, fed = left_padded([[r.new[-1]] for r in self.rows] + [r.prompt_ids for r in joining], pad_token(self.tokenizer))
        width = input_ids.shape[1]
        if self.cache is None:
            self.cache, self.mask = DynamicCache(config=self.model.config), fed.new_zeros(0, 0)
        assert self.mask is not None
        if joining:
            for layer in self.cache.layers:
                if getattr(layer, "keys", None) is not None and layer.keys.numel():
                    layer.keys = torch.cat([layer.keys, layer.keys.new_zeros(len(joining), *layer.keys.shape[1:])])
                    layer.values = torch.cat([layer.values, layer.values.new_zeros(len(joining), *layer.values.shape[1:])])
            self.mask = torch.cat([self.mask, self.mask.new_zeros(len(joining), self.mask.shape[1])])
        self.mask = torch.cat([self.mask, fed], dim=1)
        self.rows = self.rows + joining
        started = time.perf_counter()
        with self.adapters([r.request.adapter for r in self.rows]):
            out = self.model(input_ids=input_ids, attention_mask=self.mask, position_ids=(self.mask.cumsum(-1) - 1)[:, -width:].clamp(min=0),
                             past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self._sample(self.rows, out.logits[:, -1, :], time.perf_counter() - started)

    def _sample(self, rows: list[Row], logits: torch.Tensor, forward_seconds: float) -> None:
        started = time.perf_counter()
        for row, token in zip(rows, next_tokens(logits, rows, self.generator).tolist()):
            row.new.append(token)
            if row.request.streamer is not None:
                row.request.streamer.put(torch.tensor([token]))
        self._observe(len(rows), forward_seconds + time.perf_counter() - started, len(rows))

    def _leave(self) -> None:
        """Finished rows and rows whose client went away leave the batch; a request is answered when its
        last row finishes. Cache columns that only padding uses any more are dropped."""
        keep: list[int] = []
        for i, row in enumerate(self.rows):
            request = row.request
            gone = request.cancelled is not None and request.cancelled.is_set()
            if gone or id(request) not in self.pending:
                if self.pending.pop(id(request), None) is not None:
                    request.fail(ClientGone("the client disconnected while its posts were being written"))
                continue
            if not row.finished:
                keep.append(i)
                continue
            pending = self.pending[id(request)]
            pending.samples.append(finish_sample(self.tokenizer, request.job.prompt, row.new, list(row.stop), request.sampling))
            pending.rows_left -= 1
            if pending.rows_left == 0:
                del self.pending[id(request)]
                if request.streamer is not None:
                    request.streamer.end()
                request.future.set_result(pending.samples)
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.mask = [], None, None
            return
        index = torch.tensor(keep)
        self.rows = [self.rows[i] for i in keep]
        assert self.mask is not None
        self.mask = self.mask[index]
        first = int(self.mask.any(dim=0).nonzero()[0])
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]
