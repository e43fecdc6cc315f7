"""The dead-letter log line: the reason once, then the error."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from scalepatterns.queue import MemoryBroker, Message, Producer, Reject, RetryPolicy, Worker


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Reject("unsubscribed"), "rejected by the handler (Reject: unsubscribed)"),
        (ValueError("bad address"), "gave up after 1 attempts (ValueError: bad address)"),
    ],
)
def test_a_dead_letter_is_logged_with_its_reason_and_error(
    error: Exception, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = MemoryBroker()
    failed = threading.Event()

    def handler(message: Message) -> None:
        failed.set()
        raise error

    with (
        caplog.at_level(logging.WARNING, logger="scalepatterns.queue"),
        Worker(broker, "emails", handler, retry=RetryPolicy(attempts=1)),
    ):
        Producer(broker).publish("emails", {"to": "ada@example.com"}, message_id="m1")
        assert failed.wait(5)
        deadline = time.monotonic() + 5
        while broker.depth("emails.dead") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    broker.close()
    lines = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert lines == [f"message m1 on emails dead-lettered after 1 attempt(s): {expected}"]
