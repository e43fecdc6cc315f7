"""A dead Redis is logged once per outage, naming the server."""

from __future__ import annotations

import logging

import pytest

from scalepatterns.cache import Cache


def test_the_failing_backend_line_names_host_and_port(caplog: pytest.LogCaptureFixture) -> None:
    cache = Cache.redis("redis://:hunter2@127.0.0.1:1/0", namespace="dead", socket_timeout=0.2)

    @cache.cached()
    def price(sku: str) -> float:
        return 9.99

    with caplog.at_level(logging.WARNING, logger="scalepatterns.cache"):
        assert {price("apple") for _ in range(10)} == {9.99}
    lines = [r.getMessage() for r in caplog.records if "failing" in r.getMessage()]
    assert lines == [
        "cache 'dead': redis backend at 127.0.0.1:1 failing (ConnectionError); skipping it for 5.0s"
    ]
    cache.close()
