"""Settings shared by every test tier."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# The contract suites shipped in the package are test code: rewrite their asserts, before
# any test module imports them.
pytest.register_assert_rewrite("scalepatterns.queue.testing", "scalepatterns.cache.testing")

# One hypothesis profile: no deadline (a shared 2-core machine makes timings noisy);
# HYPOTHESIS_MAX_EXAMPLES raises the count for a longer local run.
settings.register_profile(
    "scalepatterns",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("scalepatterns")

# Which real server a test needs follows from the fixtures it uses: `-m "not rabbitmq"`
# then selects exactly the tests that run without RabbitMQ.
SERVER_FIXTURES = {
    "redis_url": "redis",
    "throwaway_redis": "redis",
    "cluster_ports": "redis",
    "sentinel_group": "redis",
    "postgres_url": "postgres",
    "pg_cluster": "postgres",
    "failover_cluster": "postgres",
    "amqp_url": "rabbitmq",
    "rabbitmq_cluster": "rabbitmq",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & set(SERVER_FIXTURES):
            item.add_marker(SERVER_FIXTURES[fixture])
