"""A local HTTP server on 127.0.0.1 that answers as Bluesky's AppView, a Mastodon instance and the X API
v2 document it: real paths, field names, pagination (Bluesky cursors, Mastodon Link headers, X
meta.next_token), error bodies and rate-limit headers. Tests and benchmarks/sync.py drive the real
client libraries (atproto, Mastodon.py, tweepy) against it and inject faults: 429 with Retry-After,
5xx answers, truncated bodies, slow pages."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

X_TOKEN = "test-bearer-token-5f2c9e"
"""The only bearer token the fake X API accepts."""

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def cid(text: str) -> str:
    return "bafyrei" + base64.b32encode(hashlib.sha256(text.encode()).digest()).decode().lower().rstrip("=")[:52]


@dataclass
class FakePost:
    id: int
    """Order key: larger is newer (an X or Mastodon id; the Bluesky rkey is derived from it)."""
    text: str
    at: datetime
    reply_to: str | None = None
    """Handle (username) replied to."""
    repost_of: str | None = None
    """Author of the reposted post (the text is theirs)."""
    lang: str = "en"
    likes: int = 0
    reposts: int = 0
    edited: bool = False
    visibility: str = "public"
    spoiler: str = ""
    html: str | None = None
    """Mastodon: the content HTML (default: the text in a <p>)."""
    long_text: str | None = None
    """X: a long post's full text (note_tweet); `text` is then its first 280 characters."""
    edit_ids: list[int] = field(default_factory=list)
    """X: earlier ids of an edited post."""


@dataclass
class FakeAccount:
    handle: str
    id: str
    posts: list[FakePost] = field(default_factory=list)
    """Newest first."""
    suspended: bool = False

    def add(self, text: str, **kwargs) -> FakePost:  # type: ignore[no-untyped-def]
        newest = self.posts[0].id if self.posts else 1_000_000
        at = kwargs.pop("at", None) or (self.posts[0].at + timedelta(minutes=7) if self.posts else EPOCH)
        post = FakePost(id=newest + 1 + kwargs.pop("gap", 0), text=text, at=at, **kwargs)
        self.posts.insert(0, post)
        return post


@dataclass
class Fault:
    route: str
    """'bsky.profile', 'bsky.feed', 'mastodon.lookup', 'mastodon.statuses', 'x.user', 'x.tweets'."""
    kind: str
    """'429', '500', '503', 'truncate', or 'exhausted' (a good answer whose rate-limit headers say the
    window is spent)."""
    times: int = 1
    after: int = 0
    """Let this many requests of the route through first."""
    retry_after: float | None = None


class FakeNetworks:
    def __init__(self) -> None:
        self.bluesky: dict[str, FakeAccount] = {}
        self.mastodon: dict[str, FakeAccount] = {}
        self.x: dict[str, FakeAccount] = {}
        self.faults: list[Fault] = []
        self.requests: list[str] = []
        self.seen_headers: list[dict[str, str]] = []
        self.delay_s = 0.0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeNetworks:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, route: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r == route)

    def fault_for(self, route: str) -> Fault | None:
        with self.lock:
            self.requests.append(route)
            seen = sum(1 for r in self.requests if r == route)
            for fault in self.faults:
                if fault.route == route and fault.times > 0 and seen > fault.after:
                    fault.times -= 1
                    return fault
        return None

    # Bluesky: did:plc ids, at:// URIs, records with $type, reasons with $type.
    def bluesky_account(self, handle: str, n: int = 0) -> FakeAccount:
        account = FakeAccount(handle, _did(handle))
        for i in range(n):
            account.add(f"Bluesky post number {i} from {handle}, with a few words to learn from")
        self.bluesky[handle] = account
        return account

    def mastodon_account(self, user: str, n: int = 0) -> FakeAccount:
        account = FakeAccount(user, str(109_000_000 + len(self.mastodon)))
        for i in range(n):
            account.add(f"Toot number {i} from {user}, with a few words to learn from")
        self.mastodon[user] = account
        return account

    def x_account(self, username: str, n: int = 0) -> FakeAccount:
        account = FakeAccount(username, str(44_196_397 + len(self.x)))
        for i in range(n):
            account.add(f"Tweet number {i} from {username}, with a few words to learn from")
        self.x[username.lower()] = account
        return account


def _handler(net: FakeNetworks) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            with net.lock:
                net.seen_headers.append(dict(self.headers))
            for route, prefix, answer in ROUTES:
                if url.path.startswith(prefix):
                    fault = net.fault_for(route)
                    if net.delay_s and route.endswith(("feed", "statuses", "tweets")):
                        time.sleep(net.delay_s)
                    if fault is not None and fault.kind != "exhausted":
                        self.fault(fault)
                        return
                    status, body, headers = answer(net, self, url.path[len(prefix):], query)
                    if fault is not None:  # a good answer that spends the window's last request
                        reset = time.time() + (fault.retry_after or 1)
                        headers |= {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(math.ceil(reset))}
                    self.send(status, body, headers)
                    return
            self.send(404, {"error": "NotFound"}, {})

        def fault(self, fault: Fault) -> None:
            if fault.kind == "429":
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                self.send(429, {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}, headers)
            elif fault.kind == "truncate":
                self.send(200, None, {}, raw=b'{"feed": [{"post": {"uri": "at://did:plc:x/app.bsky.feed.post/3', )
            else:
                self.send(int(fault.kind), {"error": "InternalServerError", "message": "Internal Server Error"}, {})

        def send(self, status: int, body: object, headers: dict[str, str], raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


# --- Bluesky AppView (app.bsky.*) ---

def _did(handle: str) -> str:
    return "did:plc:" + hashlib.sha256(handle.encode()).hexdigest()[:24]


def _bsky_author(account: FakeAccount) -> dict:
    return {"did": account.id, "handle": account.handle, "displayName": account.handle.split(".")[0].title(),
            "labels": [], "createdAt": iso(EPOCH)}


def _rkey(post: FakePost) -> str:
    return "3l" + format(post.id, "011d")


def _bsky_item(net: FakeNetworks, account: FakeAccount, post: FakePost) -> dict:
    author = account
    if post.repost_of:
        author = net.bluesky.get(post.repost_of) or FakeAccount(post.repost_of, _did(post.repost_of))
    uri = f"at://{author.id}/app.bsky.feed.post/{_rkey(post)}"
    record: dict = {"$type": "app.bsky.feed.post", "text": post.text, "createdAt": iso(post.at), "langs": [post.lang]}
    item: dict = {}
    if post.reply_to:
        parent_account = net.bluesky.get(post.reply_to) or FakeAccount(post.reply_to, _did(post.reply_to))
        parent_uri = f"at://{parent_account.id}/app.bsky.feed.post/3lparent00001"
        ref = {"uri": parent_uri, "cid": cid(parent_uri)}
        record["reply"] = {"root": ref, "parent": ref}
        parent_view = {"$type": "app.bsky.feed.defs#postView", "uri": parent_uri, "cid": cid(parent_uri),
                       "author": _bsky_author(parent_account), "indexedAt": iso(EPOCH),
                       "record": {"$type": "app.bsky.feed.post", "text": "the parent", "createdAt": iso(EPOCH)}}
        item["reply"] = {"root": parent_view, "parent": parent_view}
    item["post"] = {
        "uri": uri, "cid": cid(uri + post.text), "author": _bsky_author(author), "record": record,
        "replyCount": 0, "repostCount": post.reposts, "likeCount": post.likes, "quoteCount": 0,
        "indexedAt": iso(post.at), "labels": [],
    }
    if post.repost_of:
        repost_uri = f"at://{account.id}/app.bsky.feed.repost/{_rkey(post)}"
        item["reason"] = {"$type": "app.bsky.feed.defs#reasonRepost", "by": _bsky_author(account),
                          "uri": repost_uri, "cid": cid(repost_uri), "indexedAt": iso(post.at)}
    return item


def _bsky_lookup(net: FakeNetworks, actor: str) -> FakeAccount | None:
    return next((a for a in net.bluesky.values() if actor in (a.handle, a.id)), None)


def bsky_profile(net: FakeNetworks, handler, rest: str, query: dict):  # type: ignore[no-untyped-def]
    account = _bsky_lookup(net, query.get("actor", ""))
    if account is None:
        return 400, {"error": "InvalidRequest", "message": "Profile not found"}, {}
    if account.suspended:
        return 400, {"error": "AccountTakedown", "message": "Account has been suspended"}, {}
    body = _bsky_author(account) | {"postsCount": len(account.posts), "followersCount": 10, "followsCount": 5,
                                     "indexedAt": iso(EPOCH)}
    return 200, body, _bsky_limits()


def _bsky_limits() -> dict:
    return {"RateLimit-Limit": "3000", "RateLimit-Remaining": "2999", "RateLimit-Reset": str(int(time.time()) + 300),
            "RateLimit-Policy": "3000;w=300"}


def bsky_feed(net: FakeNetworks, handler, rest: str, query: dict):  # type: ignore[no-untyped-def]
    account = _bsky_lookup(net, query.get("actor", ""))
    if account is None:
        return 400, {"error": "InvalidRequest", "message": "Profile not found"}, {}
    limit = min(int(query.get("limit", 50)), 100)
    items = account.posts
    if "cursor" in query:  # the AppView's cursor is the sort time of the last item served
        below = datetime.fromisoformat(query["cursor"].replace("Z", "+00:00"))
        items = [p for p in items if p.at.replace(microsecond=p.at.microsecond // 1000 * 1000) < below]
    served = items[:limit]
    body: dict = {"feed": [_bsky_item(net, account, p) for p in served]}
    if len(items) > limit:
        body["cursor"] = iso(served[-1].at)
    return 200, body, _bsky_limits()


# --- Mastodon (/api/v1) ---

def _mastodon_account(account: FakeAccount) -> dict:
    return {
        "id": account.id, "username": account.handle, "acct": account.handle, "display_name": account.handle.title(),
        "locked": False, "bot": False, "discoverable": True, "group": False, "created_at": iso(EPOCH),
        "note": "<p>Test account</p>", "url": f"https://mastodon.test/@{account.handle}", "uri": f"https://mastodon.test/users/{account.handle}",
        "avatar": "https://mastodon.test/avatars/original/missing.png", "avatar_static": "https://mastodon.test/avatars/original/missing.png",
        "header": "https://mastodon.test/headers/original/missing.png", "header_static": "https://mastodon.test/headers/original/missing.png",
        "followers_count": 10, "following_count": 5, "statuses_count": len(account.posts),
        "last_status_at": "2026-01-01", "emojis": [], "fields": [],
    } | ({"suspended": True} if account.suspended else {})


def _mastodon_status(account: FakeAccount, post: FakePost) -> dict:
    base = f"https://mastodon.test/users/{account.handle}/statuses/{post.id}"
    content = post.html if post.html is not None else f"<p>{post.text}</p>"
    status = {
        "id": str(post.id), "created_at": iso(post.at), "in_reply_to_id": None, "in_reply_to_account_id": None,
        "sensitive": bool(post.spoiler), "spoiler_text": post.spoiler, "visibility": post.visibility, "language": post.lang,
        "uri": base, "url": f"https://mastodon.test/@{account.handle}/{post.id}", "replies_count": 0,
        "reblogs_count": post.reposts, "favourites_count": post.likes, "edited_at": iso(post.at + timedelta(minutes=1)) if post.edited else None,
        "content": content, "reblog": None, "application": None, "account": _mastodon_account(account),
        "media_attachments": [], "mentions": [], "tags": [], "emojis": [], "card": None, "poll": None,
    }
    if post.reply_to:
        status["in_reply_to_id"] = "109999999999"
        status["in_reply_to_account_id"] = "42"
        status["mentions"] = [{"id": "42", "username": post.reply_to.split("@")[0], "acct": post.reply_to,
                               "url": f"https://mastodon.test/@{post.reply_to}"}]
    if post.repost_of:
        original = FakeAccount(post.repost_of, "77")
        inner = _mastodon_status(original, FakePost(id=post.id - 500_000, text=post.text, at=post.at))
        status |= {"reblog": inner, "content": "", "uri": f"{base}/activity"}
    return status


def mastodon_lookup(net: FakeNetworks, handler, rest: str, query: dict):  # type: ignore[no-untyped-def]
    account = net.mastodon.get(query.get("acct", "").split("@")[0])
    if account is None:
        return 404, {"error": "Record not found"}, {}
    if account.suspended:
        return 410, {"error": "Account suspended"}, {}
    return 200, _mastodon_account(account), _mastodon_limits()


def _mastodon_limits() -> dict:
    reset = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    return {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "299", "X-RateLimit-Reset": reset}


def mastodon_statuses(net: FakeNetworks, handler, rest: str, query: dict):  # type: ignore[no-untyped-def]
    account_id = rest.split("/")[0]
    account = next((a for a in net.mastodon.values() if a.id == account_id), None)
    if account is None:
        return 404, {"error": "Record not found"}, {}
    limit = min(int(query.get("limit", 20)), 40)
    items = [p for p in account.posts if p.visibility != "direct"]
    if "max_id" in query:
        items = [p for p in items if p.id < int(query["max_id"])]
    if "since_id" in query:
        items = [p for p in items if p.id > int(query["since_id"])]
    if "min_id" in query:
        items = [p for p in items if p.id > int(query["min_id"])][-limit:]
    served = items[:limit]
    headers = _mastodon_limits()
    if served:
        path = f"{net.url}/api/v1/accounts/{account.id}/statuses"
        headers["Link"] = (f'<{path}?{urlencode({"limit": limit, "max_id": served[-1].id})}>; rel="next", '
                           f'<{path}?{urlencode({"limit": limit, "min_id": served[0].id})}>; rel="prev"')
    return 200, [_mastodon_status(account, p) for p in served], headers


# --- X API v2 (/2) ---

X_TIMELINE_LIMIT = 3200


def _x_limits() -> dict:
    return {"x-rate-limit-limit": "1500", "x-rate-limit-remaining": "1499", "x-rate-limit-reset": str(int(time.time()) + 900)}


def _x_unauthorized(handler) -> tuple | None:  # type: ignore[no-untyped-def]
    if handler.headers.get("Authorization") != f"Bearer {X_TOKEN}":
        return 401, {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}, {}
    return None


def x_user(net: FakeNetworks, handler, rest: str, query: dict):  # type: ignore[no-untyped-def]
    if (refused := _x_unauthorized(handler)) is not None:
        return refused
    username = rest.strip("/")
    account = net.x.get(username.lower())
    if account is None or account.suspended:
        detail = (f"User has been suspended: [{username}]." if account is not None
                  else f"Could not find user with username: [{username}].")
        return 200, {"errors": [{"value": username, "detail": detail, "title": "Not Found Error", "resource_type": "user",
                                 "parameter": "username", "resource_id": username,
                                 "type": "https://api.twitter.com/2/problems/resource-not-found"}]}, _x_limits()
    data = {"id": account.id, "name": account.handle.title(), "username": account.handle, "protected": False,
            "public_metrics": {"followers_count": 10, "following_count": 5, "tweet_count": len(account.posts), "listed_count": 0}}
    return 200, {"data": data}, _x_limits()


def _x_tweet(account: FakeAccount, post: FakePost) -> dict:
    tweet: dict = {
        "id": str(post.id), "text": post.text, "created_at": iso(post.at), "lang": post.lang, "author_id": account.id,
        "edit_history_tweet_ids": [str(i) for i in post.edit_ids] + [str(post.id)],
        "public_metrics": {"retweet_count": post.reposts, "reply_count": 0, "like_count": post.likes, "quote_count": 0,
                           "bookmark_count": 0, "impression_count": 100},
    }
    if post.long_text:
        tweet["note_tweet"] = {"text": post.long_text}
    if post.repost_of:
        tweet["text"] = f"RT @{post.repost_of}: {post.text}"
        tweet["referenced_tweets"] = [{"type": "retweeted", "id": str(post.id - 500_000)}]
    if post.reply_to:
        tweet["referenced_tweets"] = [{"type": "replied_to", "id": str(post.id - 400_000)}]
        tweet["in_reply_to_user_id"] = "99"
    return tweet


def x_tweets(net: FakeNetworks, handler, rest: str, query: dict):  # type: ignore[no-untyped-def]
    if (refused := _x_unauthorized(handler)) is not None:
        return refused
    user_id = rest.split("/")[0]
    account = next((a for a in net.x.values() if a.id == user_id), None)
    if account is None:
        return 404, {"title": "Not Found Error", "detail": "Could not find user", "type": "about:blank", "status": 404}, {}
    limit = min(int(query.get("max_results", 10)), 100)
    items = account.posts[:X_TIMELINE_LIMIT]
    if "since_id" in query:
        items = [p for p in items if p.id > int(query["since_id"])]
    if "until_id" in query:
        items = [p for p in items if p.id < int(query["until_id"])]
    if "pagination_token" in query:  # X's tokens stand for a position in the timeline: here, the id to continue below
        below = int(query["pagination_token"].removeprefix("7140dibdnow9c7btw4"))
        items = [p for p in items if p.id < below]
    served = items[:limit]
    if not served:
        return 200, {"meta": {"result_count": 0}}, _x_limits()
    meta = {"result_count": len(served), "newest_id": str(served[0].id), "oldest_id": str(served[-1].id)}
    if len(items) > limit:
        meta["next_token"] = f"7140dibdnow9c7btw4{served[-1].id}"
    body: dict = {"data": [_x_tweet(account, p) for p in served], "meta": meta}
    replied = [p for p in served if p.reply_to]
    if replied:
        body["includes"] = {"users": [{"id": "99", "name": replied[0].reply_to, "username": replied[0].reply_to}]}
    return 200, body, _x_limits()


ROUTES = [
    ("bsky.profile", "/xrpc/app.bsky.actor.getProfile", bsky_profile),
    ("bsky.feed", "/xrpc/app.bsky.feed.getAuthorFeed", bsky_feed),
    ("mastodon.lookup", "/api/v1/accounts/lookup", mastodon_lookup),
    ("mastodon.statuses", "/api/v1/accounts/", mastodon_statuses),
    ("x.user", "/2/users/by/username/", x_user),
    ("x.tweets", "/2/users/", x_tweets),
]


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)
