"""The users example runs and tells the story its docstring tells."""

from __future__ import annotations

import pytest

from tests.support.examples import load_example


def test_users_example_moves_only_the_planned_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    figures = load_example("sharding_users", monkeypatch).main(count=600, verbose=False)
    assert figures["rows_total"] == 600
    assert figures["rows_moved"] == round(figures["ring_moved"] * 600)
    assert figures["range_skew"] > 1.2  # A-M is the busy half
    assert figures["ring_skew"] < figures["range_skew"]
