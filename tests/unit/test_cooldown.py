"""The shared cool-down core: failures in a row, out for a cool-down, then trials."""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, replace
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import scalepatterns._cooldown as module
from scalepatterns._cooldown import CooldownPolicy, CooldownState
from scalepatterns.errors import ConfigurationError


def test_the_module_example_runs() -> None:
    fence = re.compile(r"```python\n(?P<code>.*?)```", re.S)
    samples = fence.findall(module.__doc__ or "")
    assert samples
    for code in samples:
        exec(compile(textwrap.dedent(code), "_cooldown", "exec"), {"__name__": "doc_example"})


def test_the_threshold_th_failure_in_a_row_makes_a_cool_down_due() -> None:
    state = CooldownState(CooldownPolicy(3, 5.0))
    assert [state.failed(), state.failed()] == [None, None]
    state.succeeded()  # the row is broken
    assert [state.failed(), state.failed(), state.failed()] == [None, None, "threshold"]
    assert not state.out, "failed() only says what is due; trip() starts it"
    assert state.failed() == "threshold", "still due if the caller did not trip"
    assert state.trip(100.0) == 5.0
    assert (state.out, state.until, state.failures) == (True, 105.0, 0)


def test_no_threshold_means_only_the_caller_trips() -> None:
    state = CooldownState(CooldownPolicy(None, 5.0))
    assert all(state.failed() is None for _ in range(1000))
    state.trip(0.0)
    assert state.out


def test_doubling_up_to_max_cooldown_and_back_to_the_start_after_a_good_trial() -> None:
    state = CooldownState(CooldownPolicy(1, 10.0, max_cooldown=50.0))
    now = 0.0
    lengths = []
    for _ in range(5):
        lengths.append(state.trip(now))
        now = state.until
        assert state.try_trial(now)
        assert state.failed() == "again"
    assert lengths == [10.0, 20.0, 40.0, 50.0, 50.0]
    state.trip(now)
    assert state.try_trial(state.until)
    assert state.succeeded()
    assert state.in_row == 0
    assert state.trip(1000.0) == 10.0


def test_without_max_cooldown_every_cool_down_is_the_same() -> None:
    state = CooldownState(CooldownPolicy(1, 3.0))
    assert {state.trip(float(i)) for i in range(20)} == {3.0}


def test_a_long_row_of_cool_downs_does_not_overflow() -> None:
    state = CooldownState(CooldownPolicy(1, 1.0, max_cooldown=300.0))
    for i in range(2000):
        assert state.trip(float(i)) <= 300.0
    assert state.in_row == 2000
    assert state.trip(0.0) == 300.0


def test_trials_wait_for_the_end_of_the_cool_down_and_are_counted() -> None:
    state = CooldownState(CooldownPolicy(1, 10.0, trial_calls=2))
    state.failed()
    state.trip(0.0)
    assert state.cooling(9.9)
    assert not state.trial_due(9.9)
    assert not state.try_trial(9.9)
    assert state.remaining(4.0) == 6.0
    assert not state.cooling(10.0)
    assert state.remaining(10.0) == 0.0
    assert state.try_trial(10.0)
    assert state.try_trial(10.0)
    assert not state.try_trial(10.0), "only trial_calls trials at once"
    state.release_trial()  # one was cancelled
    assert state.try_trial(11.0)
    assert not state.succeeded(), "one good trial of two"
    assert state.out
    assert state.succeeded()
    assert not state.out
    assert state.remaining(11.0) == 0.0


def test_trials_that_never_report_are_presumed_lost_after_the_timeout() -> None:
    state = CooldownState(CooldownPolicy(1, 5.0, trial_timeout=5.0))
    state.failed()
    state.trip(0.0)
    assert state.try_trial(5.0)
    assert not state.try_trial(9.9)
    assert state.try_trial(10.0), "the lost trial's place goes to the next caller"
    assert state.trials == 1
    assert not state.try_trial(14.9)


def test_outcomes_trial_ignores_calls_that_are_not_trials() -> None:
    state = CooldownState(CooldownPolicy(2, 5.0))
    state.failed()
    state.failed()
    state.trip(0.0)
    assert state.failures == 0, "a new cool-down starts a fresh count"
    assert state.failed() is None, "a late call's failure while cooling"
    assert not state.succeeded(), "a late call's success while cooling"
    assert state.out
    assert state.until == 5.0
    assert state.try_trial(5.0)
    assert state.failed() == "again"


def test_outcomes_any_lets_every_outcome_decide() -> None:
    state = CooldownState(CooldownPolicy(2, 5.0, outcomes="any"))
    state.failed()
    assert state.failed() == "threshold"
    state.trip(0.0)
    assert state.failures == 2, "failures go on counting"
    assert state.failed() == "again", "any failure while out starts another cool-down"
    state.trip(1.0)
    assert state.until == 6.0
    assert state.succeeded(), "any success ends the cool-down"
    assert (state.out, state.failures) == (False, 0)


def test_admit_lets_calls_in_use_go_and_takes_a_trial_when_out() -> None:
    state = CooldownState(CooldownPolicy(1, 5.0))
    assert state.admit(0.0)
    assert state.trials == 0
    state.failed()
    state.trip(0.0)
    assert not state.admit(1.0)
    assert state.admit(5.0)
    assert state.trials == 1
    assert not state.admit(5.0)


def test_trip_until_adopts_a_given_end_and_reset_cleans_everything() -> None:
    state = CooldownState(CooldownPolicy(1, 5.0))
    assert state.trip(10.0, until=42.0) == 32.0
    assert state.until == 42.0
    assert state.try_trial(42.0)
    state.reset()
    assert (state.out, state.until, state.failures, state.in_row, state.trials) == (
        False,
        0.0,
        0,
        0,
        0,
    )


def test_a_cool_down_may_end_at_time_zero_or_before() -> None:
    # "out" is its own flag: no time value stands for "in use"
    state = CooldownState(CooldownPolicy(1, 5.0))
    state.trip(-5.0)
    assert state.out
    assert state.until == 0.0
    assert state.cooling(-0.1)
    assert not state.admit(-0.1)
    assert state.admit(0.0)


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": True}, "failure_threshold"),
        ({"failure_threshold": 1.5}, "failure_threshold"),
        ({"cooldown": 0}, "cooldown"),
        ({"cooldown": math.nan}, "cooldown"),
        ({"cooldown": math.inf}, "cooldown"),
        ({"max_cooldown": 1.0}, "max_cooldown"),
        ({"max_cooldown": math.inf}, "max_cooldown"),
        ({"trial_calls": 0}, "trial_calls"),
        ({"trial_timeout": 0}, "trial_timeout"),
        ({"trial_timeout": math.nan}, "trial_timeout"),
        ({"outcomes": "some"}, "outcomes"),
    ],
)
def test_bad_policies_name_the_parameter(changes: dict[str, object], parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        replace(CooldownPolicy(1, 5.0), **changes)
    assert info.value.parameter == parameter


def test_seconds_given_as_integers_are_floats() -> None:
    policy = CooldownPolicy(1, 5, max_cooldown=10, trial_timeout=2)
    assert (policy.cooldown, policy.max_cooldown, policy.trial_timeout) == (5.0, 10.0, 2.0)
    assert all(isinstance(v, float) for v in (policy.cooldown, policy.max_cooldown))


# ---------------------------------------------------------------- properties
# A reference written from the rules in the module's docstring, one phase at a time,
# driven alongside the core by random operations and a clock that only moves on.


@dataclass
class Reference:
    policy: CooldownPolicy
    phase: Literal["in", "out"] = "in"
    row: int = 0  # failures in a row
    ends: float = 0.0
    streak: int = 0  # cool-downs in a row
    out_now: int = 0  # trials out
    good: int = 0
    lost_at: float = 0.0

    def length(self) -> float:
        p = self.policy
        if p.max_cooldown is None:
            return p.cooldown
        length = p.cooldown
        for _ in range(self.streak - 1):
            length = min(p.max_cooldown, length * 2)
        return length

    def failed(self) -> str | None:
        self.row += 1
        if self.phase == "in":
            t = self.policy.failure_threshold
            return "threshold" if t is not None and self.row >= t else None
        if self.out_now > 0 or self.policy.outcomes == "any":
            return "again"
        return None

    def trip(self, now: float) -> float:
        self.phase = "out"
        self.streak += 1
        length = self.length()
        self.ends = now + length
        self.out_now = self.good = 0
        if self.policy.outcomes == "trial":
            self.row = 0
        return length

    def succeeded(self) -> bool:
        self.row = 0
        if self.phase == "in":
            return False
        if self.policy.outcomes == "trial":
            if self.out_now == 0:
                return False
            self.good += 1
            if self.good < self.policy.trial_calls:
                return False
        self.phase, self.streak, self.out_now, self.good = "in", 0, 0, 0
        return True

    def try_trial(self, now: float) -> bool:
        if self.phase == "in" or now < self.ends:
            return False
        timeout = self.policy.trial_timeout
        if self.out_now >= self.policy.trial_calls:
            if timeout is None or now < self.lost_at:
                return False
            self.out_now = 0
        self.out_now += 1
        if timeout is not None:
            self.lost_at = now + timeout
        return True

    def release(self) -> None:
        self.out_now = max(0, self.out_now - 1)


policies = st.builds(
    CooldownPolicy,
    failure_threshold=st.none() | st.integers(1, 4),
    cooldown=st.sampled_from([1.0, 2.5, 5.0]),
    max_cooldown=st.none() | st.sampled_from([5.0, 20.0]),
    trial_calls=st.integers(1, 3),
    trial_timeout=st.none() | st.sampled_from([1.0, 4.0]),
    outcomes=st.sampled_from(["trial", "any"]),
)
operations = st.lists(
    st.sampled_from(["fail", "ok", "trial", "release", "wait", "wait_long"]), max_size=80
)


@given(policies, operations)
def test_the_core_follows_the_reference(policy: CooldownPolicy, ops: list[str]) -> None:
    state, model = CooldownState(policy), Reference(policy)
    now = 0.0
    for op in ops:
        if op == "fail":
            due = state.failed()
            assert due == model.failed()
            if due is not None:
                assert state.trip(now) == model.trip(now)
        elif op == "ok":
            assert state.succeeded() == model.succeeded()
        elif op == "trial":
            assert state.try_trial(now) == model.try_trial(now)
        elif op == "release":
            state.release_trial()
            model.release()
        else:
            now += 0.5 if op == "wait" else 7.0
        assert state.out == (model.phase == "out")
        assert state.failures == model.row
        assert state.trials == model.out_now
        if state.out:
            assert state.until == model.ends
            assert state.cooling(now) == (now < model.ends)
            assert state.remaining(now) == max(0.0, model.ends - now)


@given(policies, operations)
def test_invariants(policy: CooldownPolicy, ops: list[str]) -> None:
    state = CooldownState(policy)
    now = 0.0
    lengths: list[float] = []
    for op in ops:
        if op == "fail":
            if state.failed() is not None:
                lengths.append(state.trip(now))
        elif op == "ok":
            if state.succeeded():
                lengths.clear()
                assert (state.out, state.failures, state.in_row, state.trials) == (
                    False,
                    0,
                    0,
                    0,
                )
        elif op == "trial":
            went = state.try_trial(now)
            if went:
                assert now >= state.until, "no trial while the cool-down runs"
            else:
                assert state.trials <= policy.trial_calls
        elif op == "release":
            state.release_trial()
        else:
            now += 0.5 if op == "wait" else 7.0
        assert 0 <= state.trials <= policy.trial_calls
        if state.cooling(now):
            assert not state.admit(now), "no call while the cool-down runs"
        # lengths within a row never shrink and stay within [cooldown, max_cooldown]
        ceiling = policy.max_cooldown if policy.max_cooldown is not None else policy.cooldown
        assert all(policy.cooldown <= n <= ceiling for n in lengths)
        assert lengths == sorted(lengths)
