"""The skip-or-fail rule: pointed at a wrong port, the round-trip tests fail, not skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def _run_roundtrip(test: str, env_overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400", **env_overrides}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            f"tests/integration/test_server_roundtrip.py::{test}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


WRONG = {
    "test_redis_round_trip": ("SCALEPATTERNS_REDIS_URL", "redis://127.0.0.1:{port}/0"),
    "test_postgres_round_trip": (
        "SCALEPATTERNS_POSTGRES_URL",
        "postgresql+psycopg://postgres@127.0.0.1:{port}/test",
    ),
    "test_rabbitmq_round_trip": (
        "SCALEPATTERNS_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:{port}/%2F",
    ),
}


@pytest.mark.parametrize("test", sorted(WRONG))
def test_wrong_port_fails_when_services_are_required(test: str) -> None:
    variable, template = WRONG[test]
    result = _run_roundtrip(
        test, {variable: template.format(port=free_port()), "SCALEPATTERNS_REQUIRE_SERVICES": "1"}
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout  # the server fixture fails, so the test errors
    assert "not reachable" in result.stdout


@pytest.mark.parametrize("test", sorted(WRONG))
def test_wrong_port_skips_when_services_are_optional(test: str) -> None:
    variable, template = WRONG[test]
    result = _run_roundtrip(
        test, {variable: template.format(port=free_port()), "SCALEPATTERNS_REQUIRE_SERVICES": "0"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
