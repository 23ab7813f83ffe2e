"""Prometheus metrics of one app: requests and latency per route, posts per decoding step, tokens, and
each loaded model's queue depth."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self, queue_depths: Callable[[], dict[str, int]]):
        self.registry = CollectorRegistry()
        self.requests = Counter("tweetforge_requests_total", "HTTP requests", ["path", "status"], registry=self.registry)
        self.latency = Histogram("tweetforge_request_seconds", "Request latency", ["path"], registry=self.registry,
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
        self.batch_size = Histogram("tweetforge_batch_posts",
                                    "Posts decoded together: per decoding step (per generate() call for recurrent models)",
                                    registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64))
        self.tokens = Counter("tweetforge_generated_tokens_total", "Tokens generated", registry=self.registry)
        self.tokens_per_second = Gauge("tweetforge_tokens_per_second", "Tokens/s of the last batch", registry=self.registry)
        self.queue_depth = Gauge("tweetforge_queue_depth", "Requests waiting for a batch", ["model"], registry=self.registry)
        self.queue_depths = queue_depths

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        self.requests.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def observe_batch(self, posts: int, seconds: float, tokens: int) -> None:
        self.batch_size.observe(posts)
        self.tokens.inc(tokens)
        if seconds:
            self.tokens_per_second.set(tokens / seconds)

    def render(self) -> bytes:
        for ref, depth in self.queue_depths().items():
            self.queue_depth.labels(ref).set(depth)
        return generate_latest(self.registry)


class MeasureRequests:
    """Counts every HTTP request and its latency per route (its path template: a bounded set of labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(path, status, time.perf_counter() - started)
