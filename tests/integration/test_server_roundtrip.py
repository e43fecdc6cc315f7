"""One round trip per real server: each fails if its server is missing or misbehaves."""

from __future__ import annotations

import pytest


@pytest.mark.redis
def test_redis_round_trip(redis_url: str, unique_name: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        assert client.set(unique_name, b"\x00value\xff", ex=30) is True
        assert client.get(unique_name) == b"\x00value\xff"
        assert 0 < client.ttl(unique_name) <= 30
        assert client.delete(unique_name) == 1
        assert client.get(unique_name) is None
    finally:
        client.close()


@pytest.mark.postgres
def test_postgres_round_trip(postgres_url: str, unique_name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    table = sa.Table(
        unique_name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
    )
    try:
        with engine.begin() as conn:
            table.create(conn)
            conn.execute(table.insert(), [{"id": 1, "name": "ada"}, {"id": 2, "name": "ünïcode"}])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.id, table.c.name).order_by(table.c.id)).all()
            server_version = conn.execute(sa.text("SHOW server_version_num")).scalar_one()
        assert [tuple(r) for r in rows] == [(1, "ada"), (2, "ünïcode")]
        assert int(server_version) >= 100000
    finally:
        with engine.begin() as conn:
            table.drop(conn, checkfirst=True)
        engine.dispose()


@pytest.mark.rabbitmq
def test_rabbitmq_round_trip(amqp_url: str, unique_name: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(unique_name, durable=False, auto_delete=False)
        channel.basic_publish(
            exchange="",
            routing_key=unique_name,
            body=b"hello",
            properties=pika.BasicProperties(message_id="m-1", delivery_mode=2),
            mandatory=True,
        )
        method, properties, body = channel.basic_get(unique_name, auto_ack=False)
        assert method is not None, "the published message did not arrive"
        assert body == b"hello"
        assert properties.message_id == "m-1"
        channel.basic_ack(method.delivery_tag)
        assert channel.queue_declare(unique_name, passive=True).method.message_count == 0
        channel.queue_delete(unique_name)
    finally:
        connection.close()
