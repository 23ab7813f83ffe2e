"""What bounds one request, whoever sends it: the body's size and the time to send it (in the app), the
request head's size and the time to send it (in the HTTP server, which reads the head before any app runs)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from tweetforge.config import Settings


@dataclass(frozen=True)
class Limits:
    """The app's share of the settings (config.py says what each bounds, and holds the defaults)."""

    max_body_bytes: int
    body_timeout_s: float
    graphql_max_depth: int
    graphql_max_aliases: int
    graphql_max_operations: int
    graphql_max_tokens: int

    @classmethod
    def of(cls, settings: Settings, **overrides: Any) -> Limits:
        return cls(**{name: overrides.get(name, getattr(settings, name)) for name in cls.__dataclass_fields__})


def error_bytes(status: int, code: str, message: str, close: bool = False) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(headers, body) of the structured JSON error every route answers with, for code below the routes."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return headers + ([(b"connection", b"close")] if close else []), body


class RequestLimits:
    """Bounds a request body while it streams, with or without Content-Length (a chunked body has none): over
    `max_body_bytes` it is refused with 413 as soon as the excess arrives, never buffered; not complete within
    `body_timeout_s` of the request head, it is refused with 408. Either way the connection is closed (the
    exception handler adds Connection: close), so the rest of the body is never read. A declared length over
    the limit is refused before the request reaches a route."""

    def __init__(self, app: ASGIApp, limits: Limits):
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:  # bytes.isdigit: ASCII digits only
            headers, body = error_bytes(413, "too_large", f"request body of {int(length)} bytes; the limit is {limit}", close=True)
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        deadline = asyncio.get_running_loop().time() + self.limits.body_timeout_s
        received, complete = 0, False

        async def receive_within_limits() -> Any:
            nonlocal received, complete
            if complete:  # after the body: the app may wait for a disconnect as long as it likes
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"the request body was not complete within {self.limits.body_timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body over the limit of {limit} bytes")
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, receive_within_limits, send)


class GuardedHttpProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP/1.1 protocol with a bound on the request head: it must arrive whole within
    `header_timeout_s` of the connection opening or of the previous response, and be at most
    `max_header_bytes`; otherwise 408 or 431 and the connection is closed. uvicorn closes idle keep-alive
    connections itself, but any byte received stops that timer and a head may grow without limit, so a client
    sending its head a byte at a time (or megabytes of it) would hold a connection, and memory, for ever.
    Class attributes because uvicorn builds the protocol itself (and pickles it for --workers): `configure`."""

    header_timeout_s: ClassVar[float] = 10.0
    max_header_bytes: ClassVar[int] = 64 * 1024

    @classmethod
    def configure(cls, header_timeout_s: float, max_header_bytes: int) -> None:
        cls.header_timeout_s, cls.max_header_bytes = header_timeout_s, max_header_bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._await_head()

    def _await_head(self) -> None:
        """From now until a request's head has been parsed (a new cycle starts), count and time the bytes."""
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_cycle, self._head_bytes = self.cycle, 0
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_expired)

    def _awaiting_head(self) -> bool:
        return self.cycle is self._head_cycle and (self.cycle is None or self.cycle.response_complete)

    def _refuse(self, status: int, code: str, message: str) -> None:
        headers, body = error_bytes(status, code, message, close=True)
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(b"HTTP/1.1 %d %s\r\n" % (status, reason) + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n" + body)
        self.transport.close()

    def _head_expired(self) -> None:
        self._head_timer = None
        # after an upgrade to a WebSocket the transport belongs to another protocol
        if self._awaiting_head() and not self.transport.is_closing() and self.transport.get_protocol() is self:
            self._refuse(408, "request_timeout", f"the request head was not complete within {self.header_timeout_s:g} s")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._awaiting_head() and not self.transport.is_closing():  # counted after parsing: a head's last read carries body bytes
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse(431, "head_too_large", f"request line and headers over {self.max_header_bytes} bytes")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)
