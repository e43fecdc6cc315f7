"""Rate strings and bad input: every refusal names the parameter."""

from __future__ import annotations

import pytest

from scalepatterns import ConfigurationError, RateLimiter
from scalepatterns.backpressure import Rate, parse_rate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/second", Rate(100, 1.0)),
        ("5000/hour", Rate(5000, 3600.0)),
        ("10 per minute", Rate(10, 60.0)),
        ("10 per minutes", Rate(10, 60.0)),
        ("20/5 seconds", Rate(20, 5.0)),
        ("20/5s", Rate(20, 5.0)),
        ("3/d", Rate(3, 86400.0)),
        (" 7 / 250ms ", Rate(7, 0.25)),
        ("1/HOUR", Rate(1, 3600.0)),
    ],
)
def test_rate_strings(text: str, expected: Rate) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text", ["", "100", "100/", "100/fortnight", "-5/second", "1.5/second", "ten/second", "0/s"]
)
def test_unparsable_or_zero_rate_strings_name_the_parameter(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RateLimiter(text)
    assert info.value.parameter == "rate"
    assert "100/second" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"rate": 0, "period": 1.0}, "rate"),
        ({"rate": -3, "period": 1.0}, "rate"),
        ({"rate": 10, "period": 0}, "period"),
        ({"rate": 10, "period": -1.0}, "period"),
        ({"rate": 10}, "period"),
        ({"rate": "10/second", "period": 2.0}, "period"),
        ({"rate": 10.5, "period": 1.0}, "rate"),
        ({"rate": "10/second", "burst": 0}, "burst"),
        ({"rate": "10/second", "burst": -2}, "burst"),
        ({"rate": "10/second", "burst": 2, "algorithm": "fixed-window"}, "burst"),
        ({"rate": "10/second", "algorithm": "leaky"}, "algorithm"),
        ({"rate": "10/second", "fail_open": "yes"}, "fail_open"),
        ({"rate": "10/second", "prefix": ""}, "prefix"),
        ({"rate": "10/second", "prefix": "app{1}"}, "prefix"),
    ],
)
def test_bad_construction(kwargs: dict, parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RateLimiter(**kwargs)
    assert info.value.parameter == parameter


def test_cost_above_burst_or_below_one_is_refused_at_the_call() -> None:
    limiter = RateLimiter("100/second", burst=5)
    with pytest.raises(ConfigurationError) as info:
        limiter.acquire("k", cost=6)
    assert info.value.parameter == "cost"
    assert "burst (5)" in str(info.value)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigurationError):
            limiter.acquire("k", cost=bad)
    assert limiter.acquire("k", cost=5).allowed
    window = RateLimiter("3/second", algorithm="sliding-window")
    with pytest.raises(ConfigurationError):
        window.acquire("k", cost=4)
    with pytest.raises(ConfigurationError):
        limiter.limit("k", cost=6)
    with pytest.raises(ConfigurationError):
        limiter.acquire_or_wait("k", timeout=-1)
