"""The users example runs and tells the story its docstring tells."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_users_example_moves_only_the_planned_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location(
        "sharding_users", ROOT / "examples" / "sharding_users.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "sharding_users", module)
    spec.loader.exec_module(module)
    figures = module.main(count=600, verbose=False)
    assert figures["rows_total"] == 600
    assert figures["rows_moved"] == round(figures["ring_moved"] * 600)
    assert figures["range_skew"] > 1.2  # A-M is the busy half
    assert figures["ring_skew"] < figures["range_skew"]
