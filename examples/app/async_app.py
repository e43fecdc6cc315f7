"""The async build: the patterned service with `async def` routes on asyncio clients.

Every request runs on the event loop, and every wait is an ``await``: the limiter's
`aacquire` and the cache on a `redis.asyncio` client, `AsyncSession`s from the shard
routers' `async_sessionmaker()` (aiosqlite or psycopg's async driver) with `atoken`, the
session store's `aload`/`asave`, and the signup event published on an `AsyncEventBus`
(`AsyncRabbitMQBroker`). The workers are `AsyncWorker` tasks on the same loop (or in
`python -m examples.app worker`), the welcome email an `async def` behind the async forms
of timeout, retry and breaker. The routes' decisions are those of the sync builds
(`api.py`); only the I/O differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response

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


# The routes are closures over one app instance's state, as in app.py.
def create_async_app(  # noqa: PLR0915
    settings: Settings, services: Services | None = None
) -> FastAPI:
    """The async build's service (`create_app` calls it for ``SP_APP_BUILD=async``)."""
    state: dict[str, Any] = {}
    stats = RequestStats()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # building provisions the shard databases (sync I/O): kept off the loop
        svc = services or await asyncio.to_thread(Services.build, settings)
        state["services"] = svc
        app.state.services = svc  # for tests and embedding programs
        state["profile"] = _profile_loader(svc)
        svc.astart_relays()
        if settings.workers:
            await svc.astart_workers()
        serve_metrics(app, svc)
        try:
            yield
        finally:
            if services is None:
                log_stop(svc)
                await svc.aclose()

    app = FastAPI(title=f"scalepatterns reference app ({settings.build})", lifespan=lifespan)

    def svc() -> Services:
        return state["services"]  # type: ignore[no-any-return]

    async def rate_limit(request: Request) -> None:
        stats.add("requests")
        refuse_if_limited(await svc().limiter.aacquire(limit_key(request)), stats)

    async def fresh_token(request: Request, user_id: int) -> str | None:
        """The caller's token for the profile it wrote (header or session), while fresh."""
        raw = request.headers.get(TOKEN_HEADER)
        if raw is None and (sid := may_hold_token(request, user_id)):
            raw = (await svc().sessions.aload(sid) or {}).get("token")
        return fresh_router_token(raw, user_id, settings)

    async def remember_token(
        request: Request, response: Response, user_id: int, token: str | None
    ) -> None:
        if token is None:
            return
        value = hand_out_token(response, user_id, token, settings)
        sid = request.cookies.get(COOKIE)
        data = await svc().sessions.aload(sid) if sid else None
        await svc().sessions.asave(*with_token(sid, data, value, response))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "build": settings.build}

    @app.get("/users/{user_id}", dependencies=[Depends(rate_limit)])
    async def get_user(user_id: int, request: Request) -> dict[str, Any]:
        if (token := await fresh_token(request, user_id)) is not None:
            # The caller wrote moments ago: skip the cache, let the router pick a server
            # that has the write (the primary until the replica replayed it).
            stats.add("token_reads")
            async with svc().databases.session(user_id, token) as session:
                user = await session.get(User, user_id)
                profile = user.to_dict() if user else None
        else:
            profile = await state["profile"](user_id)
        if profile is None:
            raise not_found()
        return profile

    @app.post("/users", status_code=201, dependencies=[Depends(rate_limit)])
    async def create_user(body: NewUser, request: Request, response: Response) -> dict[str, Any]:
        services_ = svc()
        user = new_user(body)
        profile = user.to_dict()
        async with services_.databases.session(user.id) as session:
            session.add(user)
            # the event commits with the user (or neither does); the relay publishes it
            await OUTBOX.aadd(session, SIGNED_UP, profile, **signup_event(user.id))
            await session.commit()
            token = await services_.databases.atoken(user.id, session)
        await state["profile"].invalidate(user.id)  # a cached "not found" for this id
        await remember_token(request, response, user.id, token)
        return profile

    @app.put("/users/{user_id}", dependencies=[Depends(rate_limit)])
    async def update_user(
        user_id: int, body: ProfileUpdate, request: Request, response: Response
    ) -> dict[str, Any]:
        databases = svc().databases
        async with databases.session(user_id) as session:
            user = await session.get(User, user_id)
            if user is None:
                raise not_found()
            user.name = body.name
            user.updated_at = time.time()
            await session.commit()
            profile = user.to_dict()
            token = await databases.atoken(user_id, session)
        await state["profile"].invalidate(user_id)
        await remember_token(request, response, user_id, token)
        return profile

    @app.get("/stats")
    async def get_stats() -> dict[str, Any]:
        services_ = svc()
        return stats_body(
            services_,
            stats,
            state["profile"],
            dead_letters=await services_.adead_letters(),
            attempts=await services_.provider.aattempts(),
            sent=len(await services_.provider.asent()),
        )

    return app


def _profile_loader(services: Services) -> Any:
    """The cache-aside read of a profile: an `async def` under `@cache.cached`."""
    databases = services.databases

    @profile_cache(services)
    async def profile(user_id: int) -> dict[str, Any] | None:
        async with databases.session(user_id) as session:
            user = await session.get(User, user_id)
            return user.to_dict() if user else None

    return profile
