"""``scalepatterns queue depth`` and ``dlq list|inspect|redrive`` on the real RabbitMQ."""

from __future__ import annotations

import json
import time

import pytest

from scalepatterns.cli import exits, run
from scalepatterns.queue import (
    DeadLetters,
    Message,
    Producer,
    RabbitMQBroker,
    Reject,
    RetryPolicy,
    Worker,
)
from scalepatterns.queue.testing import Names

pytestmark = pytest.mark.rabbitmq


def dead_letters(admin: RabbitMQBroker, queue: str) -> None:
    """Three dead letters on `queue`: two rejected (type email), one ValueError (type report)."""

    def handler(message: Message) -> None:
        if message.body["kind"] == "reject":
            raise Reject(f"unsubscribed {message.body['n']}")
        raise ValueError("bad date")

    producer = Producer(admin)
    with Worker(admin, queue, handler, retry=RetryPolicy(attempts=1)):
        producer.publish(queue, {"kind": "reject", "n": 1}, message_id="r1", type="email")
        producer.publish(queue, {"kind": "reject", "n": 2}, message_id="r2", type="email")
        producer.publish(queue, {"kind": "error", "n": 3}, message_id="e1", type="report")
        deadline = time.monotonic() + 20
        while DeadLetters(admin, queue).count() < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert DeadLetters(admin, queue).count() == 3


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = run([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def test_depth_list_inspect_and_redrive(
    admin: RabbitMQBroker, names: Names, amqp_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = names.queue()
    dead_letters(admin, queue)
    url = ["--amqp-url", amqp_url]

    code, depth = cli(capsys, "queue", "depth", queue, *url)
    assert (code, depth["ready"], depth["dead_letters"]) == (exits.OK, 0, 3)

    code, listed = cli(capsys, "dlq", "list", queue, *url)
    assert (code, listed["total"], listed["matching"]) == (exits.OK, 3, 3)
    assert {m["id"]: (m["type"], m["error_type"]) for m in listed["messages"]} == {
        "r1": ("email", "Reject"),
        "r2": ("email", "Reject"),
        "e1": ("report", "ValueError"),
    }
    code, rejected = cli(
        capsys, "dlq", "list", queue, "--error-type", "Reject", "--limit", "1", *url
    )
    assert (rejected["matching"], len(rejected["messages"])) == (2, 1)

    code, inspected = cli(capsys, "dlq", "inspect", queue, "--id", "e1", *url)
    (message,) = inspected["messages"]
    assert message["body"] == {"kind": "error", "n": 3}
    assert message["error_message"] == "bad date"

    code, dry = cli(capsys, "dlq", "redrive", queue, "--type", "email", "--dry-run", *url)
    assert (code, dry["moved"], sorted(dry["ids"])) == (exits.FOUND, 2, ["r1", "r2"])
    assert DeadLetters(admin, queue).count() == 3  # a dry run moves nothing

    code, moved = cli(capsys, "dlq", "redrive", queue, "--type", "email", *url)
    assert (code, moved["moved"], moved["dead_letters_left"]) == (exits.OK, 2, 1)
    assert admin.depth(queue) == 2
    back = [admin.get(queue) for _ in range(2)]
    assert sorted(d.properties.message_id for d in back if d is not None) == ["r1", "r2"]
    for delivery in back:
        assert delivery is not None
        assert delivery.properties.headers["x-sp-attempt"] == 1  # a fresh first attempt
        delivery.ack()

    # the same for people: a table, then the tally
    assert run(["dlq", "list", queue, *url]) == exits.OK
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["id", "type", "error", "attempts", "message"]
    assert table[1].split()[:4] == ["e1", "report", "ValueError", "1"]
    assert table[-1] == f"1 dead letter(s) in {queue}.dead; 1 match, 1 shown"


def test_wrong_credentials_exit_3_without_the_password(
    amqp_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    scheme, _, rest = amqp_url.partition("://")
    host = rest.rpartition("@")[2]
    wrong = f"{scheme}://guest:not-the-password-42@{host}"
    argv = ["queue", "depth", "jobs", "--amqp-url", wrong, "--timeout", "5"]
    assert run(argv) == exits.UNREACHABLE
    captured = capsys.readouterr()
    assert "not-the-password-42" not in captured.out + captured.err
    assert "ACCESS_REFUSED" in captured.err
