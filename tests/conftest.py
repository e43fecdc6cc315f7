"""Settings shared by every test tier."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# The contract suites shipped in the package are test code: rewrite their asserts, before
# any test module imports them.
pytest.register_assert_rewrite("scalepatterns.queue.testing", "scalepatterns.cache.testing")

settings.register_profile(
    "default",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("ci", parent=settings.get_profile("default"), max_examples=200)
settings.register_profile("dev", max_examples=20, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
