"""The block's example programs run to the end and say what they did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("resilience_flaky_service.py", "back up:"),
        ("resilience_load_balancing.py", "power_of_two: served"),
    ],
)
def test_example_runs(example: str, expected: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
