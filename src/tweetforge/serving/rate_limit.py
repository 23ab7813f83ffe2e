"""A per-client rate limit on generation. The client is the address the request came from; a request's
own fields (user_id, user) never choose it, or changing them would reset the limit."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterable, Sequence

from tweetforge.errors import TweetforgeError
from tweetforge.serving.service import ServiceError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: Iterable[str]) -> list[Network]:
    """Proxies as addresses or networks (10.0.0.5, 10.0.0.0/8, ::1)."""
    try:
        return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries]
    except ValueError as exc:
        raise TweetforgeError(f"trusted proxies: {exc} (give addresses or networks like 10.0.0.0/8)") from None


def _within(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: list[str], trusted: Sequence[Network]) -> str:
    """The peer's address; when the peer is a trusted proxy, the last address in X-Forwarded-For that is not
    one of the trusted proxies (each proxy appends the address it saw, so what lies left of it is whatever
    the client claimed)."""
    if not peer or not _within(peer, trusted):
        return peer or "unknown"
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop[:64]
    return hops[0][:64] if hops else peer


class RateLimiter:
    """A token bucket per client: `per_minute` requests, refilled continuously; 0 turns it off."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._prune_at = 10_000

    def _refilled(self, tokens: float, last: float, now: float) -> float:
        return min(float(self.per_minute), tokens + (now - last) * self.per_minute / 60)

    def check(self, client: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.per_minute), now))
            tokens = self._refilled(tokens, last, now)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                wait = int((1 - tokens) * 60 / self.per_minute) + 1
                raise ServiceError(429, "rate_limited", f"more than {self.per_minute} generation requests a minute; retry in {wait} s",
                                   retry_after=wait)
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > self._prune_at:
                self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        """A bucket refilled to the brim is the same as none: memory stays bounded by the clients of the last minute."""
        self._buckets = {c: (t, last) for c, (t, last) in self._buckets.items() if self._refilled(t, last, now) < self.per_minute}
        self._prune_at = max(10_000, 2 * len(self._buckets))
