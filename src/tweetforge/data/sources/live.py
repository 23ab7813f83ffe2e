"""Live sources: an account on Bluesky, Mastodon or X named by `network:handle`, read page by page through
the network's own client library. Every client answers the same two questions (who is this account,
and what is on the page after this token) and turns its library's failures into three kinds: wait
(rate limited), retry (5xx, network, a broken body) and stop (anything a retry cannot fix). `polite`
applies the waits and the bounded backoff the same way for every network."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar

from tweetforge.data.post import Post
from tweetforge.data.sources.errors import SourceError

NETWORKS = {"bsky": "bluesky", "bluesky": "bluesky", "mastodon": "mastodon", "x": "twitter", "twitter": "twitter"}
"""The prefixes a user types, and the network name the posts carry (X posts stay 'twitter', as in archives)."""

PREFIX = {"bluesky": "bsky", "mastodon": "mastodon", "twitter": "x"}


@dataclass(frozen=True)
class Handle:
    network: str
    account: str
    """As the network spells it: alice.bsky.social (or a DID), bob@mastodon.social, carol."""

    @property
    def spec(self) -> str:
        return f"{PREFIX[self.network]}:{self.account}"


def is_live(spec: str) -> bool:
    prefix, sep, _ = spec.partition(":")
    return bool(sep) and prefix.lower() in NETWORKS


def parse_handle(spec: str) -> Handle:
    """`bsky:alice.bsky.social`, `bsky:did:plc:…`, `mastodon:@bob@mastodon.social`, `x:@carol`."""
    prefix, _, rest = spec.partition(":")
    network = NETWORKS[prefix.lower()]
    account = rest.strip().lstrip("@")
    if network == "mastodon":
        user, _, instance = account.partition("@")
        if not user or not instance or "@" in instance:
            raise LiveError(spec, "a Mastodon account is @user@instance, e.g. mastodon:@bob@mastodon.social")
        account = f"{user}@{instance.lower()}"
    elif network == "bluesky":
        if not account or " " in account or ("." not in account and not account.startswith("did:")):
            raise LiveError(spec, "a Bluesky account is a handle such as alice.bsky.social, or a DID")
        account = account if account.startswith("did:") else account.lower()
    elif not account.replace("_", "").isalnum() or len(account) > 15:
        raise LiveError(spec, "an X username is 1 to 15 letters, digits or underscores, e.g. x:@carol")
    return Handle(network, account)


@dataclass(frozen=True)
class Account:
    account: str
    account_id: str
    posts: int | None = None
    """How many posts the network says the account has (the progress bar's total), if it says."""


@dataclass
class Page:
    posts: list[Post]
    """The account's posts and reposts on this page, newer than the boundary, that tweetforge keeps."""
    newest: str | None = None
    """The network's order key (post id) of the page's first item: the cursor a completed walk keeps."""
    newest_at: datetime | None = None
    oldest_at: datetime | None = None
    """Time of the page's last item, in feed order (a recheck stops below its window)."""
    next: str | None = None
    """Token for the page after this one; None at the end of the feed or at the boundary."""
    seen: list[str] = field(default_factory=list)
    """post_id of every item on the page, kept or not (a recheck marks the others deleted)."""
    note: str | None = None
    """Something the user should hear once, e.g. X's 3,200-post limit reached."""


class LiveClient(Protocol):
    network: str
    headers: Mapping[str, str]
    """Headers of the last answer (rate limits)."""

    def lookup(self, account: str) -> Account: ...

    def page(self, account: Account, *, since: str | None, since_at: datetime | None, before: str | None) -> Page: ...


class RateLimited(Exception):
    def __init__(self, wait_s: float | None):
        self.wait_s = wait_s


class Retryable(Exception):
    """A 5xx answer, a network error or a body that does not parse: worth another try."""


class Unreadable(Exception):
    """What a retry cannot fix: the sync stops with this message, naming the account and network."""


class LiveError(SourceError):
    """An account that cannot be read: unknown, suspended, private, unreachable, or a missing or bad token."""


def rate_limit_wait(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait before the next request, from Retry-After or from an exhausted rate-limit window
    (X `x-rate-limit-*`, Mastodon `X-RateLimit-*`, Bluesky `RateLimit-*`); None when free to go."""
    now = time.time() if now is None else now
    lower = {k.lower(): v for k, v in headers.items()}
    if (retry := lower.get("retry-after")) is not None:
        try:
            return max(0.0, float(retry))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(retry).timestamp() - now)
            except (TypeError, ValueError):
                pass
    for prefix in ("x-rate-limit-", "x-ratelimit-", "ratelimit-"):
        remaining = lower.get(prefix + "remaining")
        if remaining is None or not remaining.strip().isdigit() or int(remaining) > 0:
            continue
        reset = lower.get(prefix + "reset")
        if reset is None:
            return None
        return max(0.0, _reset_time(reset, now) - now)
    return None


def _reset_time(value: str, now: float) -> float:
    try:
        number = float(value)
    except ValueError:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()  # Mastodon: an ISO time
        except ValueError:
            return now
    return number if number > 1e9 else now + number  # an epoch (X, Bluesky) or seconds from now


MAX_RATE_LIMIT_WAIT_S = 15 * 60
"""X's rate-limit windows are 15 minutes; a wait beyond that is a broken header."""

T = TypeVar("T")


@dataclass
class Politeness:
    """One request at a time, with the network's rate limits honoured and failures retried with backoff."""

    retries: int = 5
    backoff_s: float = 1.0
    on_wait: Callable[[float, str], None] | None = None
    """Told (seconds, why) before every wait, for the progress line."""
    sleep: Callable[[float], None] = time.sleep
    requests: int = 0
    waited_s: float = 0.0

    def call(self, client: LiveClient, what: Callable[[], T]) -> T:
        failures = 0
        while True:
            self._wait(rate_limit_wait(client.headers) if self.requests else None, "rate limit")
            self.requests += 1
            try:
                return what()
            except RateLimited as limited:
                wait = limited.wait_s if limited.wait_s is not None else rate_limit_wait(client.headers)
                self._wait(60.0 if wait is None else wait, "rate limited (429)")
                client.headers = {}
            except Retryable as exc:
                failures += 1
                if failures >= self.retries:
                    raise Retryable(f"{exc} (after {failures} tries)") from None
                delay = min(60.0, self.backoff_s * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
                self._wait(delay, f"retrying after: {exc}")

    def _wait(self, seconds: float | None, why: str) -> None:
        if not seconds:
            return
        seconds = min(seconds, MAX_RATE_LIMIT_WAIT_S)
        if self.on_wait:
            self.on_wait(seconds, why)
        self.sleep(seconds)
        self.waited_s += seconds


def utc(value: str | datetime | None) -> datetime | None:
    """Naive UTC, as the store keeps times."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def open_client(handle: Handle, *, base_url: str | None = None) -> LiveClient:
    """The network's client for this account, with its credential from the settings (never stored)."""
    from tweetforge.config import get_settings

    settings = get_settings()
    if handle.network == "bluesky":
        from tweetforge.data.sources.bluesky import BlueskyClient

        return BlueskyClient(base_url=base_url)
    if handle.network == "mastodon":
        from tweetforge.data.sources.mastodon import MastodonClient

        token = settings.mastodon_token.get_secret_value() if settings.mastodon_token else None
        return MastodonClient(handle.account.split("@", 1)[1], base_url=base_url, token=token)
    from tweetforge.data.sources.x_api import XClient

    if settings.x_bearer_token is None or not settings.x_bearer_token.get_secret_value():
        raise LiveError(handle.spec, "the X API needs a bearer token (paid): set TWEETFORGE_X_BEARER_TOKEN")
    return XClient(settings.x_bearer_token.get_secret_value(), base_url=base_url)
