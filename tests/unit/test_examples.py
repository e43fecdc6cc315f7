"""Every example program runs to the end on embedded defaults and says what it did.

The examples whose figures a block's tests check in detail run there too, through the
same runner (tests/support/examples.py).
"""

from __future__ import annotations

import pytest

from tests.support.examples import run_example


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("cache_user_profile.py", "500 reads of 50 users: 50 database queries"),
        ("queue_signup_welcome_email.py", "welcome emails sent: 20 of 20"),
        ("queue_report_task.py", "all reports built"),
        ("resilience_flaky_service.py", "back up:"),
        ("resilience_load_balancing.py", "power_of_two: served"),
    ],
)
def test_example_runs(script: str, expected: str) -> None:
    result = run_example(script, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected in result.stdout
