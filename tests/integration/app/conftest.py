"""The reference app on the real servers: shards as databases, Redis, RabbitMQ."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the app extra is not installed")

from examples.app.email import FakeEmailProvider
from examples.app.settings import Settings

# the routing suite's throw-away primary + streaming replica, a fixture of this folder too
from tests.integration.routing.conftest import pg_cluster  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]


def cleanup(settings: Settings) -> None:
    """Drop the test's shard databases, Redis keys, queues and exchange."""
    import redis
    import sqlalchemy as sa

    from scalepatterns.queue import RabbitMQBroker

    if settings.redis_url:
        client = redis.Redis.from_url(settings.redis_url)
        for key in client.scan_iter(f"{settings.prefix}*", count=1000):
            client.delete(key)
        client.close()
    if settings.postgres_url:
        admin = sa.create_engine(settings.postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for i in range(settings.shards):
                conn.execute(
                    sa.text(f'DROP DATABASE IF EXISTS "{settings.prefix}_s{i}" WITH (FORCE)')
                )
        admin.dispose()
    if settings.amqp_url:
        broker = RabbitMQBroker(settings.amqp_url)
        try:
            exchange = f"{settings.prefix}.events"
            for group in ("welcome-email", "analytics"):
                for queue in (f"{exchange}.{group}", f"{exchange}.{group}.dead"):
                    with contextlib.suppress(Exception):
                        broker.delete_queue(queue)
            with contextlib.suppress(Exception):
                broker.delete_exchange(exchange)
        finally:
            broker.close()


@pytest.fixture(params=["patterned", "async"])
def build(request: pytest.FixtureRequest) -> str:
    """Each test runs against the sync and the async patterned build."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def real_settings(
    tmp_path: Path, postgres_url: str, redis_url: str, amqp_url: str, unique_name: str, build: str
) -> Iterator[Settings]:
    settings = Settings(
        build=build,
        data_dir=tmp_path,
        postgres_url=postgres_url,
        redis_url=redis_url,
        amqp_url=amqp_url,
        prefix=unique_name,
        email_latency=0.001,
        retry_base=0.05,
    )
    try:
        yield settings
    finally:
        cleanup(settings)


@contextlib.contextmanager
def email_log(settings: Settings) -> Iterator[FakeEmailProvider]:
    """The fake provider's shared log in Redis, read with the test's own (sync) client:
    what any app or worker process of either build sent."""
    import redis

    client = redis.Redis.from_url(settings.redis_url or "")
    try:
        yield FakeEmailProvider(redis=client, prefix=settings.prefix)
    finally:
        client.close()


def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """The `SP_APP_*` environment that reproduces `settings` in a worker process."""
    values = {
        "SP_APP_BUILD": settings.build,
        "SP_APP_DATA_DIR": str(settings.data_dir),
        "SP_APP_SHARDS": str(settings.shards),
        "SP_APP_POSTGRES_URL": settings.postgres_url or "",
        "SP_APP_REDIS_URL": settings.redis_url or "",
        "SP_APP_AMQP_URL": settings.amqp_url or "",
        "SP_APP_PREFIX": settings.prefix,
        "SP_APP_EMAIL_LATENCY": str(settings.email_latency),
        "SP_APP_EMAIL_FAILURE_RATE": str(settings.email_failure_rate),
        "SP_APP_RETRY_ATTEMPTS": str(settings.retry_attempts),
        "SP_APP_RETRY_BASE": str(settings.retry_base),
        "SP_APP_IN_PROGRESS_TTL": str(settings.in_progress_ttl),
    }
    values.update({k: str(v) for k, v in overrides.items()})
    return {**os.environ, **values}


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "examples.app", "worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
