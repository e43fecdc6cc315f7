"""The reference app's promises on embedded defaults: tokens, invalidation, 429, the email."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event

from tests.unit.app.conftest import another_client, signup, stats, wait_for


def test_read_your_writes_goes_to_the_primary_with_the_token_and_to_the_replica_without(
    make_client: Any,
) -> None:
    writer = make_client()
    user_id, token = signup(writer)
    before = stats(writer)["queries"]

    # a fresh client (no cookie, no token): the cache misses, the replica answers
    reader = another_client(writer)
    assert reader.get(f"/users/{user_id}").json()["name"] == "Ada"
    middle = stats(writer)["queries"]
    assert middle["replica"] > before["replica"]
    assert middle["primary"] == before["primary"]

    # the writer's token (header) skips the cache and reads from the primary
    response = reader.get(f"/users/{user_id}", headers={"X-Consistency-Token": token})
    assert response.json()["name"] == "Ada"
    after = stats(writer)
    assert after["queries"]["primary"] > middle["primary"]
    assert after["queries"]["replica"] == middle["replica"]
    assert after["requests"]["token_reads"] == 1

    # the writer's own session cookie carries the token too
    assert writer.get(f"/users/{user_id}").status_code == 200
    assert stats(writer)["requests"]["token_reads"] == 2


def test_a_token_covers_only_the_profile_its_holder_wrote(make_client: Any) -> None:
    client = make_client()
    mine, token = signup(client, "Mine")
    other, _ = signup(another_client(client), "Other")
    client.get(f"/users/{other}", headers={"X-Consistency-Token": token})
    client.get(f"/users/{other}", headers={"X-Consistency-Token": token})
    figures = stats(client)
    assert figures["requests"].get("token_reads", 0) == 0
    assert (figures["cache"]["hits"], figures["cache"]["misses"]) == (1, 1)
    client.get(f"/users/{mine}", headers={"X-Consistency-Token": token})
    assert stats(client)["requests"]["token_reads"] == 1


def test_an_update_invalidates_the_cached_profile(make_client: Any) -> None:
    writer = make_client()
    user_id, _ = signup(writer, "Grace")
    reader = another_client(writer)
    assert reader.get(f"/users/{user_id}").json()["name"] == "Grace"  # miss, cached
    assert reader.get(f"/users/{user_id}").json()["name"] == "Grace"  # hit
    cache = stats(writer)["cache"]
    assert (cache["hits"], cache["misses"]) == (1, 1)

    assert writer.put(f"/users/{user_id}", json={"name": "Grace H"}).status_code == 200
    # another client, no token: the entry is gone, so it loads the new row
    assert reader.get(f"/users/{user_id}").json()["name"] == "Grace H"
    assert stats(writer)["cache"]["misses"] == 2


def test_an_unknown_user_is_404_and_a_later_signup_is_not_hidden_by_the_cache(
    make_client: Any,
) -> None:
    client = make_client()
    assert client.get("/users/12345").status_code == 404
    assert client.put("/users/12345", json={"name": "x"}).status_code == 404


def test_a_client_over_its_rate_gets_429_with_retry_after_and_others_do_not(
    make_client: Any,
) -> None:
    client = make_client(rate="1/minute", burst=2)
    user_id, _ = signup(client)  # spent from the test client's own key, not "greedy"'s
    codes = [client.get(f"/users/{user_id}", headers={"X-Client-Id": "greedy"}) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    refused = codes[-1]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["detail"]["retry_after"] > 0
    assert client.get(f"/users/{user_id}", headers={"X-Client-Id": "polite"}).status_code == 200
    assert stats(client)["requests"]["rate_limited"] == 1


def test_each_signup_gets_one_welcome_email_and_one_analytics_count(make_client: Any) -> None:
    client = make_client()
    ids = [signup(client, f"User{i}")[0] for i in range(5)]
    done = wait_for(lambda: stats(client)["emails"]["sent"] >= 5 and stats(client)["analytics"])
    assert done
    wait_for(lambda: stats(client)["analytics"].get("user.signed_up") == 5)
    figures = stats(client)
    assert figures["emails"]["sent"] == 5
    assert figures["analytics"] == {"user.signed_up": 5}
    assert figures["messages"]["processed"] == 10  # two groups x five events
    sent = sorted(line.split()[0] for line in client.app.state.services.provider.sent())
    assert sent == sorted(f"welcome:{i}" for i in ids)


def test_a_failing_provider_dead_letters_the_email_and_keeps_the_signup(make_client: Any) -> None:
    client = make_client(email_failure_rate=1.0, retry_attempts=2)
    user_id, _ = signup(client)
    assert wait_for(lambda: stats(client)["dead_letters"] == 1)
    figures = stats(client)
    assert figures["emails"]["sent"] == 0
    assert figures["messages"]["dead_lettered"] == 1
    assert figures["messages"]["retried"] == 1
    # three provider calls per delivery (retry), two deliveries, unless the breaker opened
    assert 2 <= figures["emails"]["attempts"] <= 6
    assert another_client(client).get(f"/users/{user_id}").json()["name"] == "Ada"


def test_the_breaker_stops_calling_a_provider_that_keeps_failing(make_client: Any) -> None:
    client = make_client(email_failure_rate=1.0, retry_attempts=1)
    for i in range(8):
        signup(client, f"U{i}")
    assert wait_for(lambda: stats(client)["dead_letters"] == 8)
    services = client.app.state.services
    assert services.breaker.state == "open"
    # 8 signups x 3 attempts without a breaker; it opened after its 10-call minimum
    assert 10 <= services.provider.attempts() < 8 * 3


def test_a_timed_out_call_is_retried_and_the_idempotency_key_keeps_it_to_one_email(
    make_client: Any,
) -> None:
    # the provider takes 0.4 s (it accepts the email at 0.2 s); the worker gives up at 0.1 s
    client = make_client(email_latency=0.4, email_timeout=0.1, retry_attempts=1)
    user_id, _ = signup(client)
    assert wait_for(lambda: stats(client)["dead_letters"] == 1)
    provider = client.app.state.services.provider
    assert provider.attempts() == 3  # the retry tried three times, each timed out
    assert wait_for(lambda: len(provider.sent()) == 1)
    assert [line.split()[0] for line in provider.sent()] == [f"welcome:{user_id}"]


@pytest.mark.parametrize("build", ["naive"])
def test_the_naive_build_reads_the_primary_only_and_sends_the_email_inline(
    make_client: Any,
) -> None:
    client = make_client()
    response = client.post("/users", json={"email": "n@example.com", "name": "Naive"})
    assert response.status_code == 201
    assert "X-Consistency-Token" not in response.headers
    user_id = response.json()["id"]
    for _ in range(3):
        assert client.get(f"/users/{user_id}").status_code == 200
    figures = stats(client)
    assert figures["queries"]["replica"] == 0
    assert figures["queries"]["primary"] >= 4  # every read hits the primary
    assert figures["emails"]["sent"] == 1  # sent before the response
    assert figures["cache"] == {"hits": 0, "misses": 0}


@pytest.mark.parametrize("build", ["naive"])
def test_the_naive_build_fails_the_request_when_the_provider_fails(make_client: Any) -> None:
    client = make_client(email_failure_rate=1.0)
    response = client.post("/users", json={"email": "n@example.com", "name": "Naive"})
    assert response.status_code == 502


def test_a_malformed_token_is_a_400(make_client: Any) -> None:
    client = make_client()
    user_id, _ = signup(client)
    response = client.get(f"/users/{user_id}", headers={"X-Consistency-Token": "garbage"})
    assert response.status_code == 400


def test_metrics_are_served_when_the_observability_adapter_exists(make_client: Any) -> None:
    pytest.importorskip("scalepatterns.contrib.prometheus")
    client = make_client()
    user_id, _ = signup(client)
    another_client(client).get(f"/users/{user_id}")  # no token: the cache
    response = client.get("/metrics")
    assert response.status_code == 200
    # the app's own events (its cache, limiter, queue) feed its registry
    assert 'cache="sp_app_cache"' in response.text
    assert "scalepatterns_limiter" in response.text
    assert 'router="users-' in response.text  # the read/write routers of the shards


def test_the_async_build_awaits_its_sql_on_the_event_loop_the_sync_one_runs_it_in_threads(
    make_client: Any, build: str
) -> None:
    """Each statement: was a loop running in its thread, and did an async driver run it?

    The async build awaits its database on the loop (AsyncSession, aiosqlite); a sync
    driver called on the loop would block it. The sync build's `def` routes run in
    FastAPI's thread pool instead.
    """
    client = make_client()
    databases = client.app.state.services.databases
    seen: list[tuple[bool, bool]] = []

    def record(conn: Any, *_: object) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            seen.append((False, conn.dialect.is_async))
        else:
            seen.append((True, conn.dialect.is_async))

    for engine in [*databases.primaries.values(), *databases.replicas.values()]:
        event.listen(getattr(engine, "sync_engine", engine), "before_cursor_execute", record)
    user_id, token = signup(client)  # the insert
    another_client(client).get(f"/users/{user_id}")  # a cache miss: the replica
    client.get(f"/users/{user_id}", headers={"X-Consistency-Token": token})  # the primary
    client.put(f"/users/{user_id}", json={"name": "Ada L."})
    assert len(seen) >= 5
    expected = (True, True) if build == "async" else (False, False)
    assert set(seen) == {expected}


def test_a_signup_made_while_the_broker_is_down_gets_its_email_once_it_is_back(
    make_client: Any,
) -> None:
    """The event commits with the signup (the outbox): a broker outage delays it, never
    loses it, and the signup's answer no longer depends on the broker."""
    import sqlalchemy as sa

    from examples.app.db import OUTBOX
    from scalepatterns.queue import ConnectionLost

    client = make_client()
    services = client.app.state.services
    broker = getattr(services.broker, "sync", services.broker)  # a MemoryBroker either way
    publish = broker.publish
    outage = {"on": True}

    def down(messages: Any, *, timeout: float = 30.0) -> None:
        if outage["on"]:
            raise ConnectionLost("broker down", [m.properties.message_id for m in messages])
        publish(messages, timeout=timeout)

    broker.publish = down
    user_id, _ = signup(client)  # answered while the broker is down
    url = services.databases.primaries[services.databases.shard_of(user_id)].url
    reader = sa.create_engine(url.set(drivername="sqlite"))  # the shard's file, read apart
    with reader.connect() as conn:
        rows = conn.execute(OUTBOX.table.select()).all()
    reader.dispose()
    assert [row.id for row in rows] == [f"signup:{user_id}"]  # kept, waiting for the broker
    assert stats(client)["emails"]["sent"] == 0
    outage["on"] = False
    assert wait_for(lambda: stats(client)["emails"]["sent"] == 1)
    assert [line.split()[0] for line in services.provider.sent()] == [f"welcome:{user_id}"]
