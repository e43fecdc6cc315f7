"""The queue examples run on the in-memory broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("queue_signup_welcome_email.py", "welcome emails sent: 20 of 20"),
        ("queue_report_task.py", "all reports built"),
    ],
)
def test_example_runs_in_memory(script: str, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SCALEPATTERNS_AMQP_URL"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
