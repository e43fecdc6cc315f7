"""The load test's one command, in a tiny form: every build served, table and chart written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.app import loadtest


@pytest.mark.slow
def test_the_load_test_compares_every_build_and_writes_its_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SP_APP_POSTGRES_URL", "SP_APP_REDIS_URL", "SP_APP_AMQP_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SP_APP_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    loadtest.main(
        ["--duration", "1", "--rounds", "2", "--warmup", "0.5", "--users", "300", "--clients", "3",
         "--noisy", "1", "--out", str(tmp_path)]
    )  # fmt: skip
    report = json.loads((tmp_path / "app_load.json").read_text())
    assert list(report["results"]) == ["naive", "patterned", "async"]
    naive = report["results"]["naive"]
    assert naive["requests"] > 0
    assert naive["replica_queries_per_request"] == 0
    assert naive["cache_hit_ratio"] == 0
    for build in ("naive", "patterned", "async"):
        assert len(report["results"][build]["clients_per_second_rounds"]) == 2
    for build in ("patterned", "async"):
        measured = report["results"][build]
        assert measured["requests"] > 0
        assert measured["cache_hit_ratio"] > 0
        assert measured["replica_queries_per_request"] > 0
    table = (tmp_path / "app_load.md").read_text()
    assert "| | naive | patterned | async |" in table
    assert "| cache hit ratio |" in table
    assert (tmp_path / "app_load.png").stat().st_size > 1000


def test_zipf_ids_favour_a_few_users() -> None:
    import random

    ids = loadtest.zipf_ids(1000, 20_000, 1.1, random.Random(1))
    counts = sorted((ids.count(i) for i in set(ids)), reverse=True)
    assert set(ids) <= set(range(1, 1001))
    assert sum(counts[:10]) > 0.25 * len(ids)  # the ten hottest users take over a quarter
