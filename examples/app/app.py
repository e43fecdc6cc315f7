"""The HTTP service: FastAPI routes over the wired blocks (`create_app(settings)`).

Three builds share the routes' decisions (`api.py`) and the data: ``patterned`` (cache-aside
over each shard's read/write router, tokens for read-your-writes, a per-client rate limit,
the welcome email on a queue behind breaker + retry + timeout), ``async`` (the same on
asyncio clients, its routes `async def`: `async_app.py`) and ``naive`` (every read and
write on the shard's primary, no cache, no limit, the email sent inside the request).
The routes here are plain `def`s: FastAPI runs each request in its thread pool.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response

from examples.app.api import (
    TOKEN_HEADER,
    NewUser,
    ProfileUpdate,
    RequestStats,
    fresh_router_token,
    hand_out_token,
    limit_key,
    log_stop,
    may_hold_token,
    new_user,
    not_found,
    profile_cache,
    refuse_if_limited,
    serve_metrics,
    signup_event,
    stats_body,
    with_token,
)
from examples.app.db import OUTBOX, User
from examples.app.services import SIGNED_UP, Services
from examples.app.sessions import COOKIE
from examples.app.settings import Settings


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The service of `settings.build`; builds its `Services` from `settings` (or the
    environment) on startup, or runs on `services` (then the caller closes them)."""
    settings = settings or (services.settings if services else Settings.from_env())
    if settings.asynchronous:
        from examples.app.async_app import create_async_app

        return create_async_app(settings, services)
    return _create_sync_app(settings, services)


# The routes are closures over one app instance's state (tests start several apps).
def _create_sync_app(settings: Settings, services: Services | None) -> FastAPI:  # noqa: PLR0915
    state: dict[str, Any] = {}
    stats = RequestStats()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        svc = services or Services.build(settings)
        state["services"] = svc
        app.state.services = svc  # for tests and embedding programs
        state["profile"] = _profile_loader(svc)
        if svc.bus is not None:
            svc.start_relays()
            if settings.workers:
                svc.start_workers()
        serve_metrics(app, svc)
        try:
            yield
        finally:
            if services is None:
                log_stop(svc)
                svc.close()

    app = FastAPI(title=f"scalepatterns reference app ({settings.build})", lifespan=lifespan)

    def svc() -> Services:
        return state["services"]  # type: ignore[no-any-return]

    def rate_limit(request: Request) -> None:
        stats.add("requests")
        limiter = svc().limiter
        if limiter is not None:
            refuse_if_limited(limiter.acquire(limit_key(request)), stats)

    def fresh_token(request: Request, user_id: int) -> str | None:
        """The caller's token for the profile it wrote (header or session), while fresh."""
        raw = request.headers.get(TOKEN_HEADER)
        if raw is None and (sid := may_hold_token(request, user_id)):
            raw = (svc().sessions.load(sid) or {}).get("token")
        return fresh_router_token(raw, user_id, settings)

    def remember_token(
        request: Request, response: Response, user_id: int, token: str | None
    ) -> None:
        if token is None:
            return
        value = hand_out_token(response, user_id, token, settings)
        sid = request.cookies.get(COOKIE)
        data = svc().sessions.load(sid) if sid else None
        svc().sessions.save(*with_token(sid, data, value, response))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "build": settings.build}

    @app.get("/users/{user_id}", dependencies=[Depends(rate_limit)])
    def get_user(user_id: int, request: Request) -> dict[str, Any]:
        databases = svc().databases
        if settings.naive:
            with databases.primary_session(user_id) as session:
                user = session.get(User, user_id)
                profile = user.to_dict() if user else None
        elif (token := fresh_token(request, user_id)) is not None:
            # The caller wrote moments ago: skip the cache, let the router pick a server
            # that has the write (the primary until the replica replayed it).
            stats.add("token_reads")
            with databases.session(user_id, token) as session:
                user = session.get(User, user_id)
                profile = user.to_dict() if user else None
        else:
            profile = state["profile"](user_id)
        if profile is None:
            raise not_found()
        return profile

    @app.post("/users", status_code=201, dependencies=[Depends(rate_limit)])
    def create_user(body: NewUser, request: Request, response: Response) -> dict[str, Any]:
        services_ = svc()
        user = new_user(body)
        profile = user.to_dict()
        if settings.naive:
            with services_.databases.primary_session(user.id) as session:
                session.add(user)
                session.commit()
            try:
                services_.send_email(body.email, "Welcome", idempotency_key=f"welcome:{user.id}")
            except Exception as exc:
                stats.add("email_failed")
                raise HTTPException(502, "signed up, but the welcome email failed") from exc
            return profile
        with services_.databases.session(user.id) as session:
            session.add(user)
            # the event commits with the user (or neither does); the relay publishes it
            OUTBOX.add(session, SIGNED_UP, profile, **signup_event(user.id))
            session.commit()
            token = services_.databases.token(user.id, session)
        state["profile"].invalidate(user.id)  # a cached "not found" for this id
        remember_token(request, response, user.id, token)
        return profile

    @app.put("/users/{user_id}", dependencies=[Depends(rate_limit)])
    def update_user(
        user_id: int, body: ProfileUpdate, request: Request, response: Response
    ) -> dict[str, Any]:
        databases = svc().databases
        opener = databases.primary_session if settings.naive else databases.session
        with opener(user_id) as session:
            user = session.get(User, user_id)
            if user is None:
                raise not_found()
            user.name = body.name
            user.updated_at = time.time()
            session.commit()
            profile = user.to_dict()
            token = None if settings.naive else databases.token(user_id, session)
        if not settings.naive:
            state["profile"].invalidate(user_id)
            remember_token(request, response, user_id, token)
        return profile

    @app.get("/stats")
    def get_stats() -> dict[str, Any]:
        services_ = svc()
        return stats_body(
            services_,
            stats,
            state["profile"],
            dead_letters=services_.dead_letters(),
            attempts=services_.provider.attempts(),
            sent=len(services_.provider.sent()),
        )

    return app


def _profile_loader(services: Services) -> Any:
    """The cache-aside read of a profile (patterned build), or None for the naive one."""
    if services.cache is None:
        return None
    databases = services.databases

    @profile_cache(services)
    def profile(user_id: int) -> dict[str, Any] | None:
        with databases.session(user_id) as session:
            user = session.get(User, user_id)
            return user.to_dict() if user else None

    return profile
