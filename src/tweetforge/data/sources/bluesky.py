"""Bluesky through the `atproto` SDK: an account's public posts from the AppView, without login.

`app.bsky.feed.getAuthorFeed` pages from the newest item back (limit 100, an opaque cursor). It has no
"since" parameter, so an incremental sync pages back until it reaches the newest item of the last
sync (its id, or anything older than its time)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tweetforge.data.post import Post
from tweetforge.data.sources.live import Account, Page, RateLimited, Retryable, Unreadable, utc

PUBLIC_APPVIEW = "https://public.api.bsky.app"
PAGE_SIZE = 100

ACCOUNT_ERRORS = {
    "AccountTakedown": "the account is suspended",
    "AccountDeactivated": "the account is deactivated",
    "BlockedActor": "the account blocks this reader",
}


class BlueskyClient:
    network = "bluesky"

    def __init__(self, base_url: str | None = None, timeout_s: float = 30.0):
        from atproto import Client
        from atproto_client.request import Request

        self.base_url = base_url or PUBLIC_APPVIEW
        self.headers: Mapping[str, str] = {}
        request = Request(timeout=timeout_s, event_hooks={"response": [self._keep_headers]})
        self.client = Client(base_url=self.base_url, request=request)

    def _keep_headers(self, response: Any) -> None:
        self.headers = dict(response.headers)

    def _call(self, method: Any, params: dict) -> Any:
        from atproto_client import exceptions

        try:
            return method(params)
        except exceptions.RateLimitExceededError as exc:
            raise RateLimited(exc.retry_after) from None
        except exceptions.BadRequestError as exc:
            content = exc.response.content if exc.response is not None else None
            error = getattr(content, "error", None)
            message = getattr(content, "message", None) or error or "bad request"
            if error in ACCOUNT_ERRORS:
                raise Unreadable(ACCOUNT_ERRORS[error]) from None
            if "not found" in str(message).lower() or error in ("InvalidRequest", "NotFound"):
                raise Unreadable(f"no such account on {self.base_url} ({message})") from None
            raise Unreadable(f"{self.base_url} refused the request: {message}") from None
        except exceptions.UnauthorizedError:
            raise Unreadable(f"{self.base_url} requires a login for this account") from None
        except exceptions.NetworkError as exc:  # transport failures, and 502
            raise Retryable(f"{self.base_url} not reachable ({exc.__cause__ or exc})") from None
        except exceptions.RequestException as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status is not None and status >= 500:
                raise Retryable(f"{self.base_url} answered {status}") from None
            raise Unreadable(f"{self.base_url} answered {exc}") from None
        except exceptions.ModelError as exc:
            raise Retryable(f"malformed response body from {self.base_url} ({str(exc).splitlines()[0]})") from None
        except ValueError as exc:  # a body that is not JSON (truncated, an HTML error page)
            raise Retryable(f"malformed response body from {self.base_url} ({exc})") from None

    def lookup(self, account: str) -> Account:
        profile = self._call(self.client.app.bsky.actor.get_profile, {"actor": account})
        return Account(account=profile.handle, account_id=profile.did, posts=profile.posts_count)

    def page(self, account: Account, *, since: str | None, since_at: datetime | None, before: str | None) -> Page:
        params = {"actor": account.account_id, "limit": PAGE_SIZE, "filter": "posts_with_replies"}
        if before:
            params["cursor"] = before
        answer = self._call(self.client.app.bsky.feed.get_author_feed, params)
        page = Page(posts=[], next=answer.cursor if answer.feed else None)
        for n, item in enumerate(answer.feed):
            item_id, at = _item_id(item), _sorted_at(item)
            if since is not None and (item_id == since or (since_at is not None and at is not None and at < since_at)):
                page.next = None  # reached the last sync's newest item
                break
            if n == 0:
                page.newest, page.newest_at = item_id, at
            page.oldest_at = at
            page.seen.append(item_id)
            post = _post(item, account, record=len(page.seen))
            if post is not None:
                page.posts.append(post)
        return page


def _is_repost(item: Any) -> bool:
    return getattr(item.reason, "py_type", None) == "app.bsky.feed.defs#reasonRepost"


def _item_id(item: Any) -> str:
    if _is_repost(item):
        return item.reason.uri or f"{item.post.uri}#repost-by-{item.reason.by.did}"
    return item.post.uri


def _sorted_at(item: Any) -> datetime | None:
    return utc(item.reason.indexed_at if _is_repost(item) else item.post.indexed_at)


def _field(record: Any, name: str, json_name: str | None = None) -> Any:
    if isinstance(record, dict):
        return record.get(json_name or name)
    return getattr(record, name, None)


def _post(item: Any, account: Account, *, record: int) -> Post | None:
    post = item.post
    body = post.record
    text = _field(body, "text")
    if not isinstance(text, str) or not text.strip():
        return None  # an image-only post: nothing to learn from
    repost = _is_repost(item) or post.author.did != account.account_id
    reply_to = None
    if _field(body, "reply") is not None:
        parent = getattr(item.reply, "parent", None) if item.reply is not None else None
        author = getattr(parent, "author", None)
        reply_to = getattr(author, "handle", None) or ""
    langs = _field(body, "langs") or []
    return Post(
        network="bluesky",
        post_id=_item_id(item),
        author=account.account,
        text=text,
        created_at=_sorted_at(item) if repost else utc(_field(body, "created_at", "createdAt")),
        is_retweet=repost,
        reply_to=reply_to,
        likes=post.like_count,
        reposts=post.repost_count,
        language=langs[0] if langs else None,
        record=record,
    )
