"""The reference app on PostgreSQL shards, Redis and RabbitMQ, driven by the TestClient."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis
import redis.asyncio
from fastapi.testclient import TestClient

from examples.app.app import create_app
from examples.app.settings import Settings
from tests.integration.app.conftest import cleanup, email_log, settings_env, start_worker
from tests.support.postgres_cluster import PostgresCluster
from tests.unit.app.conftest import another_client, signup, stats, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.rabbitmq]


def test_the_service_end_to_end_on_the_real_servers(real_settings: Settings) -> None:
    with TestClient(create_app(real_settings.with_(rate="1/minute", burst=20))) as writer:
        ids = [signup(writer, f"U{i}")[0] for i in range(3)]
        reader = another_client(writer)
        assert reader.get(f"/users/{ids[0]}").json()["name"] == "U0"  # miss -> replica pool
        assert reader.get(f"/users/{ids[0]}").json()["name"] == "U0"  # hit in Redis
        assert writer.put(f"/users/{ids[0]}", json={"name": "U0 v2"}).status_code == 200
        assert reader.get(f"/users/{ids[0]}").json()["name"] == "U0 v2"  # invalidated
        figures = stats(writer)
        assert figures["build"] == real_settings.build
        assert (figures["cache"]["hits"], figures["cache"]["misses"]) == (1, 2)
        assert figures["queries"]["replica"] >= 2

        # the shards are databases on the server, and the users are spread by the ring
        services = writer.app.state.services
        shards = {services.databases.shard_of(i) for i in ids}
        assert shards <= {"s0", "s1"}
        if real_settings.asynchronous:  # every client of the async build is an asyncio one
            assert isinstance(services.redis, redis.asyncio.Redis)
            assert type(services.broker).__name__ == "AsyncRabbitMQBroker"
            databases = services.databases
            engines = [*databases.primaries.values(), *databases.replicas.values()]
            assert all(e.sync_engine.dialect.is_async for e in engines)

        # one welcome email per signup, through RabbitMQ; analytics counted in Redis
        assert wait_for(lambda: stats(writer)["emails"]["sent"] == 3)
        client = redis.Redis.from_url(real_settings.redis_url or "")
        assert wait_for(
            lambda: client.hget(f"{real_settings.prefix}:analytics", "user.signed_up") == b"3"
        )
        client.close()

        # the rate limit lives in Redis: a client over it gets 429 + Retry-After
        codes = [
            reader.get(f"/users/{ids[1]}", headers={"X-Client-Id": "greedy"}).status_code
            for _ in range(21)
        ]
        assert codes.count(429) == 1
        assert codes[-1] == 429


def test_any_app_process_serves_any_session(real_settings: Settings) -> None:
    """Sessions live in Redis: a second app instance finds the writer's token."""
    with (
        TestClient(create_app(real_settings)) as first,
        TestClient(create_app(real_settings.with_(workers=False))) as second,
    ):
        user_id, _ = signup(first)
        second.cookies.update(first.cookies)
        assert second.get(f"/users/{user_id}").json()["name"] == "Ada"
        assert stats(second)["requests"]["token_reads"] == 1  # the token came from Redis


def test_read_your_writes_while_the_replica_is_paused(
    pg_cluster: PostgresCluster,
    redis_url: str,
    amqp_url: str,
    unique_name: str,
    tmp_path: Path,
    build: str,
) -> None:
    settings = Settings(
        build=build,
        data_dir=tmp_path,
        postgres_url=pg_cluster.primary_url,
        postgres_replica_url=pg_cluster.replica_url,
        redis_url=redis_url,
        amqp_url=amqp_url,
        prefix=unique_name,
        email_latency=0.001,
        workers=False,
        shards=1,
    )
    try:
        with TestClient(create_app(settings)) as writer:
            pg_cluster.wait_replayed()
            pg_cluster.set_replay("pause")
            try:
                user_id, token = signup(writer)
                assert token.split(";")[2].startswith("v1:pg:")  # a WAL position
                # without the token the replica answers: it has not replayed the signup
                assert another_client(writer).get(f"/users/{user_id}").status_code == 404
                # with it (header or session cookie) the primary answers
                assert writer.get(f"/users/{user_id}").json()["name"] == "Ada"
                other = another_client(writer)
                response = other.get(f"/users/{user_id}", headers={"X-Consistency-Token": token})
                assert response.json()["name"] == "Ada"
            finally:
                pg_cluster.set_replay("resume")
    finally:
        cleanup(settings)


def test_the_welcome_email_is_sent_once_when_the_worker_is_killed_mid_task(
    real_settings: Settings, tmp_path: Path
) -> None:
    settings = real_settings.with_(workers=False, in_progress_ttl=1.0)
    slow = start_worker(
        settings_env(settings, SP_APP_EMAIL_LATENCY=6.0, SP_APP_EMAIL_TIMEOUT=30.0),
        tmp_path / "w1.log",
    )
    second = None
    try:
        assert wait_for(lambda: b"worker started" in (tmp_path / "w1.log").read_bytes(), 60)
        with TestClient(create_app(settings)) as client, email_log(settings) as provider:
            user_id, _ = signup(client)
            # the provider accepted the email; the worker is waiting for its response
            assert wait_for(lambda: len(provider.sent()) == 1, 30)
            slow.send_signal(signal.SIGKILL)
            slow.wait(10)
            second = start_worker(
                settings_env(settings, SP_APP_EMAIL_LATENCY=0.01), tmp_path / "w2.log"
            )
            # RabbitMQ redelivers the unacked event; the claim of the dead worker expires;
            # the new worker calls the provider again with the same idempotency key
            dedup = redis.Redis.from_url(settings.redis_url or "")
            queue = f"{settings.prefix}.events.welcome-email"  # the email group's queue
            key = f"{settings.prefix}:dedup:{queue}:signup:{user_id}"
            assert wait_for(lambda: dedup.get(key) == b"done", 60), (
                tmp_path / "w2.log"
            ).read_text()
            dedup.close()
            assert provider.attempts() == 2
            assert [line.split()[0] for line in provider.sent()] == [f"welcome:{user_id}"]
            assert stats(client)["dead_letters"] == 0
    finally:
        for process in (slow, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(20)


def test_a_failing_provider_ends_in_the_dead_letter_queue_not_a_lost_signup(
    real_settings: Settings,
) -> None:
    settings = real_settings.with_(email_failure_rate=1.0, retry_attempts=2)
    with TestClient(create_app(settings)) as client:
        user_id, _ = signup(client)
        assert wait_for(lambda: stats(client)["dead_letters"] == 1, 30)
        from scalepatterns.queue import DeadLetters, RabbitMQBroker

        # read with a sync broker of the test's own, whichever build dead-lettered it
        queue = client.app.state.services.bus.queue_of("welcome-email")
        broker = RabbitMQBroker(settings.amqp_url or "")
        try:
            [letter] = DeadLetters(broker, queue).inspect()
        finally:
            broker.close()
        assert letter.body["id"] == user_id
        assert letter.error_type == "ProviderUnavailable"
        assert stats(client)["emails"]["sent"] == 0
        assert another_client(client).get(f"/users/{user_id}").json()["name"] == "Ada"
