"""What routes ask FastAPI for: the service, the admin check and the rate limit, all read from the app's
state that create_app sets. GraphQL's resolvers call the same rate limit."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from tweetforge.serving.metrics import Metrics
from tweetforge.serving.rate_limit import client_address
from tweetforge.serving.service import Service, ServiceError


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    admin_token: str | None = request.app.state.admin_token
    if not admin_token:
        raise ServiceError(403, "admin_disabled", "admin operations are off: set TWEETFORGE_ADMIN_TOKEN on the server")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), admin_token.encode()):
        raise ServiceError(401, "unauthorized", "admin operations need the header Authorization: Bearer <TWEETFORGE_ADMIN_TOKEN>")


def check_rate_limit(request: Request) -> None:
    """One generation request of this client: its address, or the one its trusted proxy forwarded for."""
    address = client_address(request.client.host if request.client else None, request.headers.getlist("x-forwarded-for"),
                             request.app.state.trusted_proxies)
    request.app.state.rate_limiter.check(address)


ServiceDep = Annotated[Service, Depends(get_service)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RateLimited = Depends(check_rate_limit)
"""`dependencies=[RateLimited]` counts a route's requests against the client's generation budget."""
AdminDep = Depends(require_admin)
"""`dependencies=[AdminDep]` puts a route or a router behind the bearer token."""
