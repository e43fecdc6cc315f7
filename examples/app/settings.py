"""Configuration from environment variables, with embedded defaults for every server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

BUILDS = ("patterned", "async", "naive")


def _read(
    name: str, default: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to start; `Settings.from_env()` reads `SP_APP_*`.

    | variable | default | meaning |
    |---|---|---|
    | `SP_APP_BUILD` | `patterned` | `patterned`, `async` (patterned, on asyncio) or `naive` |
    | `SP_APP_DATA_DIR` | a temporary folder | where the SQLite shard files live |
    | `SP_APP_SHARDS` | `2` | number of shard databases |
    | `SP_APP_POSTGRES_URL` | none (SQLite) | a server; shards are its databases `<prefix>_s<i>` |
    | `SP_APP_POSTGRES_REPLICA_URL` | none | a streaming replica of that server |
    | `SP_APP_REDIS_URL` | none (memory) | cache, sessions, limits, dedup, the provider's log |
    | `SP_APP_AMQP_URL` | none (`MemoryBroker`) | RabbitMQ for the signup events |
    | `SP_APP_PREFIX` | `sp_app` | prefix of databases, Redis keys, queues and exchanges |
    | `SP_APP_RATE` / `SP_APP_BURST` | `100/second` / `50` | per-client rate limit |
    | `SP_APP_CACHE_TTL` | `60` | seconds a cached profile is fresh |
    | `SP_APP_EMAIL_LATENCY` | `0.02` | seconds the fake email provider takes |
    | `SP_APP_EMAIL_FAILURE_RATE` | `0` | share of provider calls that fail (1: always) |
    | `SP_APP_EMAIL_TIMEOUT` | `1.0` | seconds the worker waits for the provider per attempt |
    | `SP_APP_WORKERS` | `1` | run the email and analytics workers inside the app process |
    | `SP_APP_RETRY_ATTEMPTS` | `4` | deliveries of a signup event before it is dead-lettered |
    | `SP_APP_IN_PROGRESS_TTL` | `30` | seconds a crashed worker's claim holds off a redelivery |
    """

    build: str = "patterned"
    data_dir: Path | None = None  # the SQLite shard files; None: a temporary directory the
    # app removes when it stops
    shards: int = 2
    postgres_url: str | None = None
    postgres_replica_url: str | None = None
    redis_url: str | None = None
    amqp_url: str | None = None
    prefix: str = "sp_app"
    rate: str = "100/second"
    burst: int = 50
    cache_ttl: float = 60.0
    email_latency: float = 0.02
    email_failure_rate: float = 0.0
    email_timeout: float = 1.0
    workers: bool = True
    retry_attempts: int = 4
    retry_base: float = 0.2
    in_progress_ttl: float = 30.0
    token_window: float = 5.0

    def __post_init__(self) -> None:
        if self.build not in BUILDS:
            raise ValueError(f"SP_APP_BUILD must be one of {BUILDS}, not {self.build!r}")
        if self.shards < 1:
            raise ValueError("SP_APP_SHARDS must be >= 1")

    @property
    def naive(self) -> bool:
        return self.build == "naive"

    @property
    def asynchronous(self) -> bool:
        """The async build: the patterned one on asyncio clients, its routes `async def`."""
        return self.build == "async"

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from `environ` (default: `os.environ`)."""

        def _env(name: str, default: str | None = None) -> str | None:
            return _read(name, default, environ)

        data_dir = _env("SP_APP_DATA_DIR")
        return cls(
            build=_env("SP_APP_BUILD", "patterned") or "patterned",
            data_dir=Path(data_dir) if data_dir else None,
            shards=int(_env("SP_APP_SHARDS", "2") or 2),
            postgres_url=_env("SP_APP_POSTGRES_URL"),
            postgres_replica_url=_env("SP_APP_POSTGRES_REPLICA_URL"),
            redis_url=_env("SP_APP_REDIS_URL"),
            amqp_url=_env("SP_APP_AMQP_URL"),
            prefix=_env("SP_APP_PREFIX", "sp_app") or "sp_app",
            rate=_env("SP_APP_RATE", "100/second") or "100/second",
            burst=int(_env("SP_APP_BURST", "50") or 50),
            cache_ttl=float(_env("SP_APP_CACHE_TTL", "60") or 60),
            email_latency=float(_env("SP_APP_EMAIL_LATENCY", "0.02") or 0.02),
            email_failure_rate=float(_env("SP_APP_EMAIL_FAILURE_RATE", "0") or 0),
            email_timeout=float(_env("SP_APP_EMAIL_TIMEOUT", "1.0") or 1.0),
            workers=(_env("SP_APP_WORKERS", "1") or "1") not in ("0", "false", "no"),
            retry_attempts=int(_env("SP_APP_RETRY_ATTEMPTS", "4") or 4),
            retry_base=float(_env("SP_APP_RETRY_BASE", "0.2") or 0.2),
            in_progress_ttl=float(_env("SP_APP_IN_PROGRESS_TTL", "30") or 30),
        )
