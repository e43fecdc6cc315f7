"""What the routes of every build share: request and response shapes, the consistency
token, the rate-limit answer, the session cookie, the `/stats` body and `/metrics`.

The routes themselves are in `app.py` (the sync builds) and `async_app.py` (the async
build); between the two only the I/O differs (``await``), every decision is made here.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import Counter
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import BaseModel

from examples.app.db import User
from examples.app.services import Services
from examples.app.sessions import COOKIE, new_session_id
from examples.app.settings import Settings

log = logging.getLogger("examples.app")

TOKEN_HEADER = "X-Consistency-Token"
# A hint cookie naming the profile the client just wrote: reads of any other profile skip
# the session lookup (a Redis round trip) altogether.
WROTE_COOKIE = "sp_wrote"
CLIENT_HEADER = "X-Client-Id"


class NewUser(BaseModel):
    email: str
    name: str


class ProfileUpdate(BaseModel):
    name: str


class RequestStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


# -- the rate limit ------------------------------------------------------------------------


def limit_key(request: Request) -> str:
    """The limiter's key: the `X-Client-Id` header, else the client's address."""
    client = request.headers.get(CLIENT_HEADER) or (
        request.client.host if request.client else "unknown"
    )
    return f"client:{client}"


def refuse_if_limited(decision: Any, stats: RequestStats) -> None:
    """`429` with `Retry-After` (whole seconds, rounded up) when the limiter said no."""
    if decision.allowed:
        return
    stats.add("rate_limited")
    raise HTTPException(
        429,
        {"error": "rate limited", "retry_after": decision.retry_after},
        headers={"Retry-After": str(max(1, math.ceil(decision.retry_after)))},
    )


# -- consistency tokens --------------------------------------------------------------------


def format_token(user_id: int, issued: float, token: str) -> str:
    """``<user id>;<issued, unix seconds>;<the shard router's token>``."""
    return f"{user_id};{issued:.3f};{token}"


def parse_token(raw: str) -> tuple[int, float, str]:
    try:
        user_id, issued, token = raw.split(";", 2)
        return int(user_id), float(issued), token
    except ValueError as exc:
        raise HTTPException(400, f"malformed {TOKEN_HEADER}") from exc


def may_hold_token(request: Request, user_id: int) -> str | None:
    """The session id to look a token up in, if this client wrote `user_id` lately.

    A token covers the profile its holder wrote: reads of other profiles, which this
    client did not change, keep using the cache without a session lookup.
    """
    if request.cookies.get(WROTE_COOKIE) != str(user_id):
        return None
    return request.cookies.get(COOKIE)


def fresh_router_token(raw: str | None, user_id: int, settings: Settings) -> str | None:
    """The router's token inside `raw` if it covers `user_id` and is still in its window."""
    if not raw:
        return None
    written, issued, token = parse_token(raw)
    if written != user_id or time.time() - issued > settings.token_window:
        return None
    return token


def hand_out_token(response: Response, user_id: int, token: str, settings: Settings) -> str:
    """Put a write's token in the response (header, hint cookie); returns its value."""
    value = format_token(user_id, time.time(), token)
    response.headers[TOKEN_HEADER] = value
    response.set_cookie(
        WROTE_COOKIE, str(user_id), max_age=math.ceil(settings.token_window), samesite="lax"
    )
    return value


def with_token(
    sid: str | None, data: dict[str, Any] | None, value: str, response: Response
) -> tuple[str, dict[str, Any]]:
    """The session (a new one, its cookie set, if `data` is None) holding token `value`."""
    if sid is None or data is None:
        sid, data = new_session_id(), {}
        response.set_cookie(COOKIE, sid, httponly=True, samesite="lax")
    return sid, {**data, "token": value}


# -- users ---------------------------------------------------------------------------------


def new_user(body: NewUser) -> User:
    """A user with a random 53-bit id (a JavaScript-safe integer)."""
    user_id = secrets.randbelow(2**53 - 1) + 1
    return User(id=user_id, email=body.email, name=body.name, updated_at=time.time())


def not_found() -> HTTPException:
    return HTTPException(404, "no such user")


def log_stop(services: Any) -> None:
    """The line the app logs when it stops: what it ran, and what it gave back."""
    workers = services.bus.workers() if services.bus is not None else {}
    in_flight = sum(worker.in_flight for worker in workers.values())
    log.info(
        "the %s build stops: %d outbox relay(s), %d worker group(s), %d message(s) in flight "
        "(finished within the shutdown timeout, or given back to the queue)",
        services.settings.build,
        len(services.relays),
        len(workers),
        in_flight,
    )


def signup_event(user_id: int) -> dict[str, str]:
    """The outbox options of a signup's event: its id (the welcome email's dedup key)
    and its ordering key."""
    return {"message_id": f"signup:{user_id}", "key": f"user:{user_id}"}


def profile_cache(services: Services) -> Any:
    """The `@cache.cached` decorator of the profile reads (`def` or `async def`)."""
    # "not found" is cached briefly: a read racing a signup on a lagging replica would
    # otherwise hide the new user for the whole TTL
    negative_ttl = min(services.settings.cache_ttl, 2.0)
    return services.cache.cached(key="user:{user_id}", name="profile", negative_ttl=negative_ttl)


# -- /stats and /metrics ------------------------------------------------------------------


def stats_body(
    services: Services,
    stats: RequestStats,
    profile: Any,
    *,
    dead_letters: int,
    attempts: int,
    sent: int,
) -> dict[str, Any]:
    """The process's counters; the figures that need I/O are passed in."""
    cache = {"hits": 0, "misses": 0}
    if profile is not None:
        info = profile.cache_info()
        cache = {"hits": info.hits, "misses": info.misses}
    return {
        "build": services.settings.build,
        "requests": stats.snapshot(),
        "queries": services.databases.counter.snapshot(),
        "cache": cache,
        "messages": services.message_stats.snapshot(),
        "dead_letters": dead_letters,
        "emails": {"attempts": attempts, "sent": sent},
        "analytics": dict(services.analytics),
    }


def serve_metrics(app: FastAPI, services: Services) -> None:
    """Add `/metrics` when prometheus-client and the observability adapter exist."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        from scalepatterns.contrib.prometheus import instrument
    except ImportError:
        return
    registry = CollectorRegistry()
    instrument(registry=registry, listeners=services.listeners)

    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
