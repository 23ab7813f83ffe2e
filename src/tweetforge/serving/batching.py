"""Dynamic batching: concurrent requests for one model wait up to `max_wait_ms` in a bounded queue and are
sampled together in one generate() call of at most `max_batch` posts. A full queue refuses at once
(the API answers 503 with Retry-After) instead of letting requests time out; a request whose client
went away before its batch started is skipped. Requests that carry a seed run in a batch of their own,
so that the same seed gives the same posts whatever else is being served, as do streamed ones."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tweetforge.generation.generate import Job, Sample, Sampling, sample_jobs

if TYPE_CHECKING:
    from tweetforge.serving.lora_bank import LoraBank


class Overloaded(Exception):
    """The model's queue is full."""


class ClientGone(Exception):
    """The client that asked went away before its request was sampled; the request left the queue."""


@dataclass
class Request:
    job: Job
    sampling: Sampling
    seed: int | None
    cancelled: threading.Event | None = None
    """Set when the client went away: a waiting request is skipped (a continuous batch also drops it mid-post)."""
    streamer: Any = None
    """A transformers streamer (put(token ids) / end()) that receives the post's tokens as they are made (n = 1)."""
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    adapter: int = 0
    """The slot of the adapter its rows run with, on a shared base (serving/lora_bank.py); 0: the model itself."""

    def fail(self, exc: Exception) -> None:
        """Answer with the failure; a stream is ended first, so that its reader stops waiting for tokens."""
        if self.streamer is not None:
            self.streamer.end()
        self.future.set_exception(exc)


@dataclass
class BatchStats:
    batches: int = 0
    posts: int = 0
    last_batch_size: int = 0
    tokens_per_second: float = 0.0


class Batcher:
    def __init__(self, model: Any, tokenizer: Any, *, max_new_tokens: int, max_batch: int = 16, max_wait_ms: float = 10.0,
                 queue_size: int = 64, observe: Callable[[int, float, int], None] | None = None, bank: LoraBank | None = None):
        self.model, self.tokenizer, self.max_new_tokens, self.bank = model, tokenizer, max_new_tokens, bank
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.queue: queue.Queue[Request] = queue.Queue(maxsize=queue_size)
        self.observe = observe
        """Called with (batch size in posts, seconds, new tokens) after each batch: metrics."""
        self.stats = BatchStats()
        self._held: Request | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tweetforge-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job, sampling: Sampling, seed: int | None = None, cancelled: threading.Event | None = None,
               streamer: Any = None, adapter: int = 0) -> Future:
        request = Request(job, sampling, seed, cancelled, streamer, adapter=adapter)
        try:
            self.queue.put_nowait(request)
        except queue.Full:
            raise Overloaded(f"{self.queue.maxsize} requests are waiting for this model") from None
        return request.future

    def depth(self) -> int:
        return self.queue.qsize() + (self._held is not None)

    def stop(self) -> None:
        """Stop after serving what is already queued (a reload must not drop in-flight requests)."""
        self._stopped.set()
        self._thread.join(timeout=300)

    def _next(self, timeout: float | None) -> Request | None:
        if self._held is not None:
            held, self._held = self._held, None
            return held
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _collect(self) -> list[Request]:
        """The first waiting request, and whichever requests can join it (same sampling settings, no seed)
        within max_wait, up to max_batch posts."""
        first = self._next(timeout=0.2)
        if first is None:
            return []
        batch, posts = [first], first.job.n
        if first.seed is not None or first.streamer is not None:
            return batch
        deadline = first.enqueued + self.max_wait
        while posts < self.max_batch:
            candidate = self._next(timeout=max(0.0, deadline - time.perf_counter()))
            if candidate is None:
                break
            if (candidate.seed is not None or candidate.streamer is not None or candidate.sampling != first.sampling
                    or posts + candidate.job.n > self.max_batch):
                self._held = candidate  # starts the next batch
                break
            batch.append(candidate)
            posts += candidate.job.n
        return batch

    def _run(self) -> None:
        while not (self._stopped.is_set() and self._held is None and self.queue.empty()):
            batch = [r for r in self._collect() if r.future.set_running_or_notify_cancel()]
            if batch:
                self._serve(batch)

    def _serve(self, batch: list[Request]) -> None:
        """One generate() call for the batch, seeded with its first request's seed (or a random one); each
        request gets its samples, or the failure."""
        import random

        seed = batch[0].seed if batch[0].seed is not None else random.getrandbits(31)
        started = time.perf_counter()
        try:
            with self.adapters([r.adapter for r in batch for _ in range(r.job.n)]):
                results = sample_jobs(self.model, self.tokenizer, [r.job for r in batch], batch[0].sampling, seed, self.max_new_tokens,
                                      batch[0].streamer)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure
            for r in batch:
                r.fail(exc)
            return
        tokens = sum(len(self.tokenizer(s.text)["input_ids"]) for samples in results for s in samples)
        self._observe(sum(r.job.n for r in batch), time.perf_counter() - started, tokens)
        for r, samples in zip(batch, results):
            r.future.set_result(samples)

    @contextmanager
    def adapters(self, slots: list[int]) -> Iterator[None]:
        """Around a forward pass: each row's adapter selected in the bank, which stays unchanged meanwhile."""
        if self.bank is None:
            yield
            return
        with self.bank.lock:
            self.bank.use(slots)
            yield

    def _observe(self, posts: int, seconds: float, tokens: int) -> None:
        self.stats = BatchStats(self.stats.batches + 1, self.stats.posts + posts, posts, tokens / seconds if seconds else 0.0)
        if self.observe:
            self.observe(posts, seconds, tokens)

    def draw(self, job: Job, sampling: Sampling, seed: int | None, cancelled: threading.Event | None = None) -> list[Sample]:
        """Submit and wait (for callers on a worker thread)."""
        return wait_for(self.submit(job, sampling, seed, cancelled), cancelled)


def wait_for(future: Future, cancelled: threading.Event | None) -> list[Sample]:
    """A submitted request's samples. When `cancelled` is set while the request still waits in the queue,
    it is withdrawn and never sampled."""
    while True:
        try:
            return future.result(timeout=0.05)
        except FutureTimeout:
            if cancelled is not None and cancelled.is_set() and future.cancel():
                raise ClientGone("the client disconnected before its batch started") from None
