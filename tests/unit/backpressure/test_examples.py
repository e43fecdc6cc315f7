"""The block's examples run on embedded defaults and do what they say."""

from __future__ import annotations

import pytest

from tests.support.examples import load_example


def test_api_rate_limit_example(monkeypatch: pytest.MonkeyPatch) -> None:
    outcome = load_example("backpressure_api_rate_limit", monkeypatch).main()
    assert outcome["polite ok"] == 5
    assert "polite 429" not in outcome
    # 1 s at 10/s plus a burst of 5, minus the polite user's own key: about 15 for greedy
    assert 13 <= outcome["greedy ok"] <= 15
    assert outcome["greedy ok"] + outcome["greedy 429"] == 40


def test_queue_depth_example(monkeypatch: pytest.MonkeyPatch) -> None:
    result = load_example("backpressure_queue_depth", monkeypatch).main()
    assert result["consumed"] == result["published"] == 1000
    assert result["peak depth"] <= 50
    assert result["pauses"] >= 2
