"""``scalepatterns outbox relay`` on the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from scalepatterns.cli import exits, run
from scalepatterns.outbox import Outbox
from scalepatterns.queue import RabbitMQBroker
from scalepatterns.queue.testing import Names

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture
def outbox(postgres_url: str) -> Iterator[tuple[sa.Engine, Outbox]]:
    box = Outbox(name=f"sp_outbox_{uuid.uuid4().hex[:10]}")
    engine = sa.create_engine(postgres_url)
    box.metadata.create_all(engine)
    try:
        yield engine, box
    finally:
        box.metadata.drop_all(engine)
        engine.dispose()


def add(engine: sa.Engine, box: Outbox, queue: str, count: int) -> None:
    with Session(engine) as session, session.begin():
        for i in range(count):
            box.add(session, queue, {"n": i}, key=f"user:{i % 3}")


def pending(engine: sa.Engine, box: Outbox) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(box.table)).scalar_one())


def test_drain_publishes_every_row_and_exits(
    outbox: tuple[sa.Engine, Outbox],
    admin: RabbitMQBroker,
    names: Names,
    postgres_url: str,
    amqp_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine, box = outbox
    queue = names.queue()
    add(engine, box, queue, 25)
    argv = ["outbox", "relay", "--postgres-url", postgres_url, "--amqp-url", amqp_url]
    assert run([*argv, "--table", box.name, "--drain", "--json"]) == exits.OK
    assert json.loads(capsys.readouterr().out) == {"table": box.name, "published": 25, "refused": 0}
    assert pending(engine, box) == 0
    assert admin.depth(queue) == 25


def test_the_relay_runs_until_sigterm(
    outbox: tuple[sa.Engine, Outbox],
    admin: RabbitMQBroker,
    names: Names,
    postgres_url: str,
    amqp_url: str,
) -> None:
    engine, box = outbox
    queue = names.queue()
    env = {
        **os.environ,
        "SCALEPATTERNS_POSTGRES_URL": postgres_url,
        "SCALEPATTERNS_AMQP_URL": amqp_url,
    }
    relay = subprocess.Popen(
        [sys.executable, "-m", "scalepatterns", "outbox", "relay", "--table", box.name],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        add(engine, box, queue, 10)  # written while the relay runs: NOTIFY wakes it
        deadline = time.monotonic() + 30
        while admin.depth(queue) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert admin.depth(queue) == 10
    finally:
        relay.send_signal(signal.SIGTERM)
        out, err = relay.communicate(timeout=30)
    assert relay.returncode == exits.OK, err
    assert out.strip() == f"published 10 row(s) of {box.name}"
    assert pending(engine, box) == 0
