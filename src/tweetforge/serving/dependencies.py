"""What routes ask FastAPI for: the service, the admin check and the rate limit, all read from the app's
state that create_app sets."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from tweetforge.serving.metrics import Metrics
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


def get_rate_limit(request: Request) -> Callable[[str | None], None]:
    """Call it with the request's user id: a client is its user id, or its address when it sends none."""
    limiter = request.app.state.rate_limiter
    address = request.client.host if request.client else "unknown"
    return lambda user_id: limiter.check(user_id or address)


ServiceDep = Annotated[Service, Depends(get_service)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RateLimitDep = Annotated[Callable[[str | None], None], Depends(get_rate_limit)]
AdminDep = Depends(require_admin)
"""`dependencies=[AdminDep]` puts a route or a router behind the bearer token."""
