"""The block's examples run on embedded defaults and do what they say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_rate_limit_example() -> None:
    outcome = load("backpressure_api_rate_limit").main()
    assert outcome["polite ok"] == 5
    assert "polite 429" not in outcome
    # 1 s at 10/s plus a burst of 5, minus the polite user's own key: about 15 for greedy
    assert 13 <= outcome["greedy ok"] <= 15
    assert outcome["greedy ok"] + outcome["greedy 429"] == 40


def test_queue_depth_example() -> None:
    result = load("backpressure_queue_depth").main()
    assert result["consumed"] == result["published"] == 1000
    assert result["peak depth"] <= 50
    assert result["pauses"] >= 2
