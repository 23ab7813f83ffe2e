"""A per-client rate limit on generation."""

from __future__ import annotations

import threading
import time

from tweetforge.serving.service import ServiceError


class RateLimiter:
    """A token bucket per client: `per_minute` requests, refilled continuously; 0 turns it off."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self.per_minute / 60)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                wait = int((1 - tokens) * 60 / self.per_minute) + 1
                raise ServiceError(429, "rate_limited", f"more than {self.per_minute} generation requests a minute; retry in {wait} s",
                                   retry_after=wait)
            self._buckets[client] = (tokens - 1, now)
