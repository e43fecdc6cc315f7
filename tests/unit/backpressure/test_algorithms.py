"""The pure core: hypothesis properties with explicit times (no clock at all)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalepatterns.backpressure import GCRA, FixedWindow, Rate, SlidingWindow

rates = st.builds(
    Rate,
    limit=st.integers(min_value=1, max_value=50),
    period=st.sampled_from([0.1, 0.5, 1.0, 3.0, 60.0]),
)
# A trace: increasing times (gaps in units of the period) and costs.
traces = st.lists(
    st.tuples(st.floats(min_value=0, max_value=1.5, allow_nan=False), st.integers(1, 5)),
    min_size=1,
    max_size=120,
)


def run(algorithm, rate: Rate, trace, start: float = 1000.0):
    now, state, out = start, None, []
    for gap, wanted in trace:
        now += gap * rate.period
        cost = min(wanted, algorithm.max_cost)
        decision, state = algorithm.decide(state, now, cost)
        out.append((now, cost, decision))
    return out


def assert_steady_client_never_refused(algorithm, spacing: float, start: float, cost: int = 1):
    state = None
    for i in range(200):
        decision, state = algorithm.decide(state, start + i * spacing, cost)
        assert decision.allowed, (i, decision)


def max_allowed_in_any_window(history, width: float) -> int:
    allowed = [(t, c) for t, c, d in history if d.allowed]
    best, left, total = 0, 0, 0
    for t, c in allowed:
        total += c
        while allowed[left][0] < t - width:
            total -= allowed[left][1]
            left += 1
        best = max(best, total)
    return best


@given(rates, st.integers(1, 60), traces, st.floats(min_value=0.01, max_value=5))
def test_gcra_never_allows_more_than_rate_times_window_plus_burst(rate, burst, trace, width):
    history = run(GCRA(rate, burst), rate, trace)
    window = width * rate.period
    # + a thousandth of a unit: the slack GCRA allows for float rounding
    assert max_allowed_in_any_window(history, window) <= rate.per_second * window + burst + 1e-3


@given(rates, traces, st.floats(min_value=0.01, max_value=5))
def test_sliding_window_bound(rate, trace, width):
    history = run(SlidingWindow(rate), rate, trace)
    window = width * rate.period
    bound = rate.per_second * window + rate.limit
    assert max_allowed_in_any_window(history, window) <= bound + 1e-6


@given(rates, traces, st.floats(min_value=0.01, max_value=5))
def test_fixed_window_bound(rate, trace, width):
    history = run(FixedWindow(rate), rate, trace)
    window = width * rate.period
    # A window of w seconds overlaps at most ceil(w / period) + 1 aligned windows.
    bound = rate.limit * (math.ceil(window / rate.period) + 1)
    assert max_allowed_in_any_window(history, window) <= bound


@given(
    rates,
    st.integers(1, 60),
    st.integers(1, 5),
    st.floats(min_value=1.0, max_value=3.0),
    st.floats(min_value=0, max_value=1e6),
)
def test_gcra_steady_client_under_the_rate_is_never_refused(rate, burst, cost, slack, start):
    cost = min(cost, burst)
    gcra = GCRA(rate, burst)
    spacing = cost * rate.period / rate.limit * slack
    assert_steady_client_never_refused(gcra, spacing, start, cost)


@given(
    rates,
    st.integers(1, 60),
    st.integers(1, 5),
    st.floats(min_value=1.0001, max_value=3.0),
    st.floats(min_value=1.7e9, max_value=2.2e9),
)
def test_gcra_steady_client_at_unix_epoch_times(rate, burst, cost, slack, start):
    """The Redis form computes with Unix times (a double's ulp is 2.4e-7 s there): a client
    at exactly the rate could lose to a rounding error, one 0.01% under it never does."""
    cost = min(cost, burst)
    gcra = GCRA(rate, burst)
    spacing = cost * rate.period / rate.limit * slack
    assert_steady_client_never_refused(gcra, spacing, start, cost)


# Strictly under the rate: at exactly the rate, a window index computed as now / period
# may land either side of a boundary by a rounding error.
@given(rates, st.floats(min_value=1.001, max_value=3.0), st.floats(min_value=0, max_value=1e6))
def test_fixed_window_steady_client_under_the_rate_is_never_refused(rate, slack, start):
    fixed = FixedWindow(rate)
    spacing = rate.period / rate.limit * slack
    assert_steady_client_never_refused(fixed, spacing, start, 1)


@given(
    st.builds(Rate, limit=st.integers(2, 50), period=st.sampled_from([0.5, 1.0, 60.0])),
    st.floats(min_value=1.001, max_value=3.0),
    st.floats(min_value=0, max_value=1e6),
)
def test_sliding_window_steady_client_a_unit_under_the_rate_is_never_refused(rate, slack, start):
    # The counter assumes the previous window was spread evenly, so a client at exactly the
    # rate can be refused at a boundary; one unit per window under it never is.
    sliding = SlidingWindow(rate)
    spacing = rate.period / (rate.limit - 1) * slack
    assert_steady_client_never_refused(sliding, spacing, start, 1)


@pytest.mark.parametrize(
    "algorithm", [GCRA(Rate(10, 1.0), 10), SlidingWindow(Rate(10, 1.0)), FixedWindow(Rate(10, 1.0))]
)
@given(traces)
def test_retry_after_is_when_the_call_would_pass(algorithm, trace):
    """A refused call retried exactly `retry_after` later (nothing else happening) passes."""
    for now, cost, decision in run(algorithm, algorithm.rate, trace):
        if decision.allowed:
            continue
        # Replay to get the state at that moment.
        state = None
        for t, c, _ in run(algorithm, algorithm.rate, trace):
            if t == now and c == cost:
                break
            _, state = algorithm.decide(state, t, c)
        later, _ = algorithm.decide(state, now + decision.retry_after + 1e-7, cost)
        assert later.allowed
        return


def test_gcra_decisions_in_detail() -> None:
    gcra = GCRA(Rate(10, 1.0), burst=3)
    state = None
    decisions = []
    for now in (0.0, 0.0, 0.0, 0.0, 0.1, 0.25):
        decision, state = gcra.decide(state, now, 1)
        decisions.append((decision.allowed, decision.remaining))
    assert decisions == [(True, 2), (True, 1), (True, 0), (False, 0), (True, 0), (True, 0)]
    refused, _ = gcra.decide(state, 0.25, 2)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.15)
    assert refused.reset_after == pytest.approx(0.25)  # the bucket is full again at 0.5


def test_fixed_window_resets_at_the_boundary() -> None:
    fixed = FixedWindow(Rate(2, 1.0))
    d1, s = fixed.decide(None, 5.2, 2)
    d2, s = fixed.decide(s, 5.9, 1)
    d3, s = fixed.decide(s, 6.0, 1)
    assert (d1.allowed, d2.allowed, d3.allowed) == (True, False, True)
    assert d2.retry_after == pytest.approx(0.1)
    assert fixed.expired(s, 7.0)
    assert not fixed.expired(s, 6.5)
