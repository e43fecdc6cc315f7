"""Settings shared by every test tier."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# The queue's contract suite asserts with plain `assert`: rewritten for readable failures.
# Registered here, before any test module imports it (a package __init__ registering it
# fails once an earlier directory, such as tests/unit/outbox, imported the module).
pytest.register_assert_rewrite("scalepatterns.queue.testing")

settings.register_profile(
    "default",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("ci", parent=settings.get_profile("default"), max_examples=200)
settings.register_profile("dev", max_examples=20, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
