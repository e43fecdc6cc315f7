"""Where the real servers are, and the skip-or-fail rule for tests that need them.

URLs come from environment variables (defaults: the loopback servers CI starts):

- ``SCALEPATTERNS_REDIS_URL``     redis://127.0.0.1:6379/0
- ``SCALEPATTERNS_POSTGRES_URL``  postgresql+psycopg://postgres@127.0.0.1:5432/test
- ``SCALEPATTERNS_AMQP_URL``      amqp://guest:guest@127.0.0.1:5672/%2F

A test whose server does not answer is skipped with a one-line reason, unless
``SCALEPATTERNS_REQUIRE_SERVICES=1`` (set by ``.ci/run``): then it fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

REDIS_URL = os.environ.get("SCALEPATTERNS_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "SCALEPATTERNS_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("SCALEPATTERNS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def services_required() -> bool:
    return os.environ.get("SCALEPATTERNS_REQUIRE_SERVICES", "") == "1"


def require_service(name: str, url: str, probe: Callable[[], object]) -> None:
    """Run `probe`; if it raises, skip the test (or fail it when services are required)."""
    try:
        probe()
    except Exception as exc:
        reason = f"{name} not reachable at {url}: {type(exc).__name__}: {exc}"
        if services_required():
            pytest.fail(f"{reason} (SCALEPATTERNS_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(reason)
