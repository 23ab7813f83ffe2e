"""X API v2 through `tweepy.Client`, with a bearer token (the API is paid). The user's posts page from
the newest back, 100 a page (`meta.next_token`); `since_id` bounds an incremental sync. X serves only
the 3,200 most recent posts of an account.

tweepy's host is fixed to https://api.twitter.com; a base URL (a proxy, the test server) is reached
through a transport adapter on the client's session, so tweepy itself stays unpatched."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tweetforge.data.post import Post
from tweetforge.data.sources.live import Account, Page, RateLimited, Retryable, Unreadable, rate_limit_wait, utc

API_HOST = "https://api.twitter.com"
PAGE_SIZE = 100
TIMELINE_LIMIT = 3200
TWEET_FIELDS = [
    "created_at", "lang", "public_metrics", "referenced_tweets", "note_tweet",
    "edit_history_tweet_ids", "in_reply_to_user_id", "author_id",
]


class _RedactToken(logging.Filter):
    """tweepy logs every request's headers at debug level, the Authorization header with them."""

    def __init__(self, token: str):
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg, record.args = message.replace(self.token, "***"), ()
        return True


def _rebased_adapter(base_url: str, timeout_s: float) -> Any:
    """Sends what tweepy addresses to the API host to base_url instead, with a timeout (tweepy sets none)."""
    from requests.adapters import HTTPAdapter

    class Rebased(HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:
            request.url = base_url.rstrip("/") + request.url[len(API_HOST):]
            kwargs["timeout"] = kwargs.get("timeout") or timeout_s
            return super().send(request, **kwargs)

    return Rebased()


class XClient:
    network = "twitter"

    def __init__(self, token: str, *, base_url: str | None = None, timeout_s: float = 30.0):
        import tweepy

        self.base_url = base_url or API_HOST
        self.headers: Mapping[str, str] = {}
        self.fetched = 0
        self.client = tweepy.Client(bearer_token=token, wait_on_rate_limit=False)
        self.client.session.hooks["response"].append(self._keep_headers)
        self.client.session.mount(API_HOST, _rebased_adapter(self.base_url, timeout_s))
        log = logging.getLogger("tweepy.client")
        if not any(isinstance(f, _RedactToken) for f in log.filters):
            log.addFilter(_RedactToken(token))

    def _keep_headers(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self.headers = dict(response.headers)

    def _call(self, method: Any, **kwargs: Any) -> Any:
        import requests
        import tweepy

        try:
            return method(**kwargs)
        except tweepy.TooManyRequests:
            raise RateLimited(rate_limit_wait(self.headers)) from None
        except tweepy.Unauthorized:
            raise Unreadable("X refused the bearer token in TWEETFORGE_X_BEARER_TOKEN (401)") from None
        except tweepy.Forbidden as exc:
            raise Unreadable(f"X refused the request (403): {_first(exc.api_messages)}") from None
        except tweepy.NotFound:
            raise Unreadable("no such account on X") from None
        except tweepy.TwitterServerError as exc:
            raise Retryable(f"X answered {exc.response.status_code}") from None
        except tweepy.HTTPException as exc:
            raise Unreadable(f"X answered {exc.response.status_code}: {_first(exc.api_messages)}") from None
        except requests.RequestException as exc:
            raise Retryable(f"{self.base_url} not reachable ({type(exc).__name__})") from None
        except ValueError as exc:  # the body is not JSON (truncated)
            raise Retryable(f"malformed response body from X ({str(exc)[:120]})") from None

    def lookup(self, account: str) -> Account:
        answer = self._call(self.client.get_user, username=account, user_fields=["public_metrics", "protected"])
        if answer.data is None:
            problem = (answer.errors or [{}])[0]
            detail = str(problem.get("detail") or problem.get("title") or "")
            if "suspend" in detail.lower():
                raise Unreadable("the account is suspended")
            raise Unreadable(f"no such account on X{f' ({detail})' if detail else ''}")
        user = answer.data
        if user.protected:
            raise Unreadable("the account's posts are protected (private)")
        return Account(account=user.username, account_id=str(user.id), posts=(user.public_metrics or {}).get("tweet_count"))

    def page(self, account: Account, *, since: str | None, since_at: datetime | None, before: str | None) -> Page:
        answer = self._call(
            self.client.get_users_tweets, id=account.account_id, max_results=PAGE_SIZE, since_id=since,
            pagination_token=before, tweet_fields=TWEET_FIELDS, expansions=["in_reply_to_user_id"],
        )
        tweets = answer.data or []
        if not tweets and answer.errors and answer.meta is None:
            raise Unreadable(f"X answered: {_first([e.get('detail') for e in answer.errors])}")
        meta = answer.meta or {}
        users = {str(u.id): u.username for u in (answer.includes or {}).get("users", [])}
        page = Page(posts=[], next=meta.get("next_token"))
        self.fetched += len(tweets)
        for n, tweet in enumerate(tweets):
            at = utc(tweet.created_at)
            if n == 0:
                page.newest, page.newest_at = str(tweet.id), at
            page.oldest_at = at
            post = _post(tweet, account, users, record=self.fetched - len(tweets) + n + 1)
            page.seen.append(post.post_id)
            page.posts.append(post)
        if page.next is None and since is None and self.fetched >= TIMELINE_LIMIT - PAGE_SIZE:
            page.note = (f"X serves only the {TIMELINE_LIMIT:,} most recent posts of an account: "
                         f"older posts of @{account.account} are out of reach of the API (an X archive has them all)")
        return page


def _first(messages: Any) -> str:
    messages = [m for m in messages or [] if m]
    return str(messages[0]) if messages else "no detail"


def _post(tweet: Any, account: Account, users: Mapping[str, str], *, record: int) -> Post:
    data = tweet.data
    note = data.get("note_tweet") or {}
    referenced = data.get("referenced_tweets") or []
    edits = data.get("edit_history_tweet_ids") or [str(tweet.id)]
    reply_to = None
    if any(r.get("type") == "replied_to" for r in referenced) or data.get("in_reply_to_user_id"):
        reply_to = users.get(str(data.get("in_reply_to_user_id")), "")
    metrics = data.get("public_metrics") or {}
    return Post(
        network="twitter",
        post_id=str(edits[0]),  # an edit is a new id; the post keeps the first, as X archives do
        author=account.account,
        text=note.get("text") or data["text"],
        created_at=utc(tweet.created_at),
        is_retweet=any(r.get("type") == "retweeted" for r in referenced),
        reply_to=reply_to,
        likes=metrics.get("like_count"),
        reposts=metrics.get("retweet_count"),
        language=data.get("lang"),
        record=record,
    )
