"""Mastodon through `Mastodon.py`: `@user@instance` is read from that instance's API, public posts
without a token. `accounts/:id/statuses` pages from the newest back (limit 40, the next page's max_id
in the Link header); `since_id` bounds an incremental sync."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from html.parser import HTMLParser
from typing import Any

from tweetforge.data.post import Post
from tweetforge.data.sources.live import Account, Page, RateLimited, Retryable, Unreadable, rate_limit_wait, utc

PAGE_SIZE = 40
KEPT_VISIBILITY = {"public", "unlisted"}


class _Reader(HTMLParser):
    """Mastodon's status HTML as a person reads it: paragraphs and <br> as line breaks, a link as its
    full URL (Mastodon shortens the visible part with invisible spans), mentions and hashtags as their text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.paragraphs = 0
        self.link: list[str] | None = None
        """Inside a plain link: its href; the text inside is dropped."""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "p":
            if self.paragraphs:
                self.parts.append("\n\n")
            self.paragraphs += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "a" and self.link is None:
            values = dict(attrs)
            classes = (values.get("class") or "").split()
            if "mention" not in classes and "hashtag" not in classes and values.get("href"):
                self.link = [values["href"] or ""]

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self.link is not None:
            self.parts.append(self.link[0])
            self.link = None

    def handle_data(self, data: str) -> None:
        if self.link is None:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return "".join(reader.parts).strip()


class MastodonClient:
    network = "mastodon"

    def __init__(self, instance: str, *, base_url: str | None = None, token: str | None = None, timeout_s: float = 30.0):
        import requests
        from mastodon import Mastodon

        self.instance = instance
        self.base_url = (base_url or f"https://{instance}").rstrip("/")
        self.has_token = token is not None
        self.headers: Mapping[str, str] = {}
        session = requests.Session()
        session.hooks["response"].append(self._keep_headers)
        self.api = Mastodon(
            api_base_url=self.base_url, access_token=token, ratelimit_method="throw",
            request_timeout=timeout_s, session=session, version_check_mode="none",
        )

    def _keep_headers(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self.headers = dict(response.headers)

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        from mastodon import errors

        try:
            return method(*args, **kwargs)
        except errors.MastodonRatelimitError:
            raise RateLimited(rate_limit_wait(self.headers)) from None
        except errors.MastodonNotFoundError:
            raise Unreadable(f"no such account on {self.instance}") from None
        except errors.MastodonUnauthorizedError:
            if self.has_token:
                raise Unreadable(f"{self.instance} refused the token in TWEETFORGE_MASTODON_TOKEN") from None
            raise Unreadable(f"{self.instance} serves posts only with a token: set TWEETFORGE_MASTODON_TOKEN") from None
        except errors.MastodonServerError as exc:
            raise Retryable(f"{self.instance} answered {_status(exc)}") from None
        except errors.MastodonNetworkError as exc:
            raise Retryable(f"{self.instance} not reachable ({str(exc).splitlines()[0][:200]})") from None
        except errors.MastodonAPIError as exc:
            if str(exc.args[0] if exc.args else "").startswith("Could not parse response as JSON"):
                raise Retryable(f"malformed response body from {self.instance} ({str(exc.args[-1])[:120]})") from None
            status = _status(exc)
            if status == 410:
                raise Unreadable("the account is suspended") from None
            if status == 403:
                raise Unreadable(f"{self.instance} refuses to show this account (suspended, or private)") from None
            raise Unreadable(f"{self.instance} answered {status}: {exc}") from None
        except ValueError as exc:  # the body is not JSON (truncated, an HTML error page)
            raise Retryable(f"malformed response body from {self.instance} ({str(exc)[:120]})") from None

    def lookup(self, account: str) -> Account:
        user = account.split("@", 1)[0]
        found = self._call(self.api.account_lookup, user)
        if found.get("suspended"):
            raise Unreadable("the account is suspended")
        return Account(account=f"{found['username']}@{self.instance}", account_id=str(found["id"]), posts=found.get("statuses_count"))

    def page(self, account: Account, *, since: str | None, since_at: datetime | None, before: str | None) -> Page:
        statuses = self._call(self.api.account_statuses, account.account_id, limit=PAGE_SIZE, since_id=since, max_id=before)
        page = Page(posts=[])
        following = getattr(statuses, "_pagination_next", None)
        if statuses and len(statuses) == PAGE_SIZE and following and following.get("max_id") is not None:
            page.next = str(following["max_id"])
        for n, status in enumerate(statuses):
            at = utc(status["created_at"])
            if n == 0:
                page.newest, page.newest_at = str(status["id"]), at
            page.oldest_at = at
            page.seen.append(status["uri"])
            if status.get("visibility") in KEPT_VISIBILITY:
                page.posts.append(_post(status, account, record=len(page.seen)))
        return page


def _status(exc: Exception) -> Any:
    return exc.args[1] if len(exc.args) > 1 else "an error"


def _post(status: Mapping[str, Any], account: Account, *, record: int) -> Post:
    shown = status.get("reblog") or status
    text = html_to_text(shown.get("content") or "")
    if shown.get("spoiler_text"):
        text = f"{shown['spoiler_text']}\n\n{text}"
    reply_to = None
    if status.get("in_reply_to_id") is not None:
        replied = str(status.get("in_reply_to_account_id"))
        reply_to = next((m["acct"] for m in status.get("mentions") or [] if str(m.get("id")) == replied), "")
        if replied == account.account_id:
            reply_to = account.account.split("@", 1)[0]
    return Post(
        network="mastodon",
        post_id=status["uri"],
        author=account.account,
        text=text,
        created_at=utc(status["created_at"]),
        is_retweet=status.get("reblog") is not None,
        reply_to=reply_to,
        likes=shown.get("favourites_count"),
        reposts=shown.get("reblogs_count"),
        language=shown.get("language"),
        record=record,
    )
