"""The HTTP service: FastAPI routes over the wired blocks (`create_app(settings)`).

Two builds share the routes and the data: ``patterned`` (cache-aside over each shard's
read/write router, tokens for read-your-writes, a per-client rate limit, the welcome email
on a queue behind breaker + retry + timeout) and ``naive`` (every read and write on the
shard's primary, no cache, no limit, the email sent inside the request).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel

from examples.app.db import User
from examples.app.services import SIGNED_UP, Services
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


def format_token(user_id: int, issued: float, token: str) -> str:
    """``<user id>;<issued, unix seconds>;<the shard router's token>``."""
    return f"{user_id};{issued:.3f};{token}"


def parse_token(raw: str) -> tuple[int, float, str]:
    try:
        user_id, issued, token = raw.split(";", 2)
        return int(user_id), float(issued), token
    except ValueError as exc:
        raise HTTPException(400, f"malformed {TOKEN_HEADER}") from exc


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


def _metrics(services: Services) -> Callable[[], Response] | None:
    """A `/metrics` handler when prometheus-client and the observability adapter exist."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        from scalepatterns.contrib.prometheus import instrument
    except ImportError:
        return None
    registry = CollectorRegistry()
    instrument(registry=registry, listeners=services.listeners)

    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


# The routes are closures over one app instance's state (tests start several apps).
def create_app(  # noqa: PLR0915
    settings: Settings | None = None, services: Services | None = None
) -> FastAPI:
    """The service; builds its `Services` from `settings` (or the environment) on startup."""
    settings = settings or (services.settings if services else Settings.from_env())
    state: dict[str, Any] = {}
    stats = RequestStats()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        svc = services or Services.build(settings)
        state["services"] = svc
        app.state.services = svc  # for tests and embedding programs
        state["profile"] = _profile_loader(svc)
        if svc.bus is not None and settings.workers:
            svc.subscribe_workers()
            svc.bus.start()
        metrics = _metrics(svc)
        if metrics is not None:
            app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
        try:
            yield
        finally:
            if services is None:
                svc.close()

    app = FastAPI(title=f"scalepatterns reference app ({settings.build})", lifespan=lifespan)

    def svc() -> Services:
        return state["services"]  # type: ignore[no-any-return]

    def rate_limit(request: Request) -> None:
        stats.add("requests")
        limiter = svc().limiter
        if limiter is None:
            return
        client = request.headers.get(CLIENT_HEADER) or (
            request.client.host if request.client else "unknown"
        )
        decision = limiter.acquire(f"client:{client}")
        if not decision.allowed:
            stats.add("rate_limited")
            retry_after = max(1, math.ceil(decision.retry_after))
            raise HTTPException(
                429,
                {"error": "rate limited", "retry_after": decision.retry_after},
                headers={"Retry-After": str(retry_after)},
            )

    def session_data(request: Request, response: Response) -> tuple[str, dict[str, Any]]:
        sid = request.cookies.get(COOKIE)
        data = svc().sessions.load(sid) if sid else None
        if sid is None or data is None:
            sid = new_session_id()
            data = {}
            response.set_cookie(COOKIE, sid, httponly=True, samesite="lax")
        return sid, data

    def remember_token(
        request: Request, response: Response, user_id: int, token: str | None
    ) -> None:
        if token is None:
            return
        services_ = svc()
        value = format_token(user_id, time.time(), token)
        response.headers[TOKEN_HEADER] = value
        response.set_cookie(
            WROTE_COOKIE, str(user_id), max_age=math.ceil(settings.token_window), samesite="lax"
        )
        sid, data = session_data(request, response)
        data["token"] = value
        services_.sessions.save(sid, data)

    def fresh_token(request: Request, user_id: int) -> str | None:
        """The caller's token for the profile it wrote, while it may still matter.

        A token covers the profile its holder wrote: reads of other profiles, which
        this client did not change, keep using the cache.
        """
        raw = request.headers.get(TOKEN_HEADER)
        if raw is None:
            if request.cookies.get(WROTE_COOKIE) != str(user_id):
                return None
            sid = request.cookies.get(COOKIE)
            data = svc().sessions.load(sid) if sid else None
            raw = (data or {}).get("token")
        if not raw:
            return None
        written, issued, token = parse_token(raw)
        if written != user_id:
            return None
        if time.time() - issued > settings.token_window:
            return None
        return token

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "build": settings.build}

    @app.get("/users/{user_id}", dependencies=[Depends(rate_limit)])
    def get_user(user_id: int, request: Request, response: Response) -> dict[str, Any]:
        services_ = svc()
        if settings.naive:
            with services_.databases.primary_session(user_id) as session:
                user = session.get(User, user_id)
                profile = user.to_dict() if user else None
        else:
            token = fresh_token(request, user_id)
            if token is not None:
                # The caller wrote moments ago: skip the cache, let the router pick a
                # server that has the write (the primary until the replica replayed it).
                stats.add("token_reads")
                with services_.databases.session(user_id, token) as session:
                    user = session.get(User, user_id)
                    profile = user.to_dict() if user else None
            else:
                profile = state["profile"](user_id)
        if profile is None:
            raise HTTPException(404, "no such user")
        return profile

    @app.post("/users", status_code=201, dependencies=[Depends(rate_limit)])
    def create_user(body: NewUser, request: Request, response: Response) -> dict[str, Any]:
        services_ = svc()
        user_id = secrets.randbelow(2**53 - 1) + 1
        user = User(id=user_id, email=body.email, name=body.name, updated_at=time.time())
        profile = user.to_dict()
        if settings.naive:
            with services_.databases.primary_session(user_id) as session:
                session.add(user)
                session.commit()
            try:
                services_.send_email(body.email, "Welcome", idempotency_key=f"welcome:{user_id}")
            except Exception as exc:
                stats.add("email_failed")
                raise HTTPException(502, "signed up, but the welcome email failed") from exc
            return profile
        with services_.databases.session(user_id) as session:
            session.add(user)
            session.commit()
            token = services_.databases.token(user_id, session)
        state["profile"].invalidate(user_id)  # a cached "not found" for this id
        remember_token(request, response, user_id, token)
        try:
            services_.bus.publish(SIGNED_UP, profile, message_id=f"signup:{user_id}")
        except Exception:
            # The signup is stored; the event is not. A transactional outbox would close
            # this gap; here it is logged and reported to the caller.
            log.exception("user.signed_up not published for user %s", user_id)
            stats.add("publish_failed")
            return {**profile, "event_published": False}
        return profile

    @app.put("/users/{user_id}", dependencies=[Depends(rate_limit)])
    def update_user(
        user_id: int, body: ProfileUpdate, request: Request, response: Response
    ) -> dict[str, Any]:
        services_ = svc()
        opener = (
            services_.databases.primary_session if settings.naive else services_.databases.session
        )
        with opener(user_id) as session:
            user = session.get(User, user_id)
            if user is None:
                raise HTTPException(404, "no such user")
            user.name = body.name
            user.updated_at = time.time()
            session.commit()
            profile = user.to_dict()
            token = None if settings.naive else services_.databases.token(user_id, session)
        if not settings.naive:
            state["profile"].invalidate(user_id)
            remember_token(request, response, user_id, token)
        return profile

    @app.get("/stats")
    def get_stats() -> dict[str, Any]:
        services_ = svc()
        cache: dict[str, int] = {"hits": 0, "misses": 0}
        if not settings.naive:
            info = state["profile"].cache_info()
            cache = {"hits": info.hits, "misses": info.misses}
        return {
            "build": settings.build,
            "requests": stats.snapshot(),
            "queries": services_.databases.counter.snapshot(),
            "cache": cache,
            "messages": services_.message_stats.snapshot(),
            "dead_letters": services_.dead_letters() if services_.bus is not None else 0,
            "emails": {
                "attempts": services_.provider.attempts(),
                "sent": len(services_.provider.sent()),
            },
            "analytics": dict(services_.analytics),
        }

    return app


def _profile_loader(services: Services) -> Any:
    """The cache-aside read of a profile (patterned build), or None for the naive one."""
    if services.cache is None:
        return None
    databases = services.databases

    # "not found" is cached briefly: a read racing a signup on a lagging replica would
    # otherwise hide the new user for the whole TTL
    negative_ttl = min(services.settings.cache_ttl, 2.0)

    @services.cache.cached(key="user:{user_id}", name="profile", negative_ttl=negative_ttl)
    def profile(user_id: int) -> dict[str, Any] | None:
        with databases.session(user_id) as session:
            user = session.get(User, user_id)
            return user.to_dict() if user else None

    return profile
