"""The breaker's pure core against a naive reference model (hypothesis stateful test)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from scalepatterns.clock import FakeClock
from scalepatterns.resilience.breaker_core import BreakerCore, BreakerPolicy


@dataclass
class Model:
    """The breaker as its documentation states it, written the slow, obvious way."""

    policy: BreakerPolicy
    clock: FakeClock
    state: str = "closed"
    outcomes: list[tuple[float, bool, bool]] = field(default_factory=list)
    open_until: float = 0.0
    permits: int = 0
    successes: int = 0

    def window(self) -> list[tuple[float, bool, bool]]:
        if self.policy.window_type == "count":
            return self.outcomes[-self.policy.window :]
        now = int(self.clock.monotonic())
        return [o for o in self.outcomes if int(o[0]) > now - self.policy.window]

    def permit(self) -> float | None:
        now = self.clock.monotonic()
        if self.state == "closed":
            return None
        if self.state == "open":
            if now < self.open_until:
                return self.open_until - now
            self.state, self.permits, self.successes = "half_open", 0, 0
        if self.permits < self.policy.trial_calls:
            self.permits += 1
            return None
        return 0.0

    def record(self, failed: bool, duration: float) -> None:
        slow_after = self.policy.slow_call_duration
        slow = slow_after is not None and duration >= slow_after
        if self.state == "closed":
            self.outcomes.append((self.clock.monotonic(), failed, slow))
            window = self.window()
            if len(window) < self.policy.minimum_calls:
                return
            failure_rate = sum(o[1] for o in window) / len(window)
            slow_rate = sum(o[2] for o in window) / len(window)
            if failure_rate >= self.policy.failure_rate_threshold or (
                slow_after is not None and slow_rate >= self.policy.slow_call_rate_threshold
            ):
                self.trip()
        elif self.state == "half_open" and self.permits > 0:
            if failed or slow:
                self.trip()
            else:
                self.successes += 1
                if self.successes >= self.policy.trial_calls:
                    self.state, self.outcomes = "closed", []

    def trip(self) -> None:
        self.state = "open"
        self.open_until = self.clock.monotonic() + self.policy.cooldown
        self.outcomes, self.permits, self.successes = [], 0, 0

    def release(self) -> None:
        if self.state == "half_open" and self.permits > 0:
            self.permits -= 1


@st.composite
def policies(draw: st.DrawFn) -> BreakerPolicy:
    window_type = draw(st.sampled_from(["count", "time"]))
    window = draw(st.integers(1, 8))
    minimum = draw(st.integers(1, window if window_type == "count" else 10))
    return BreakerPolicy(
        failure_rate_threshold=draw(st.sampled_from([0.25, 0.5, 0.75, 1.0])),
        window=window,
        window_type=window_type,
        minimum_calls=minimum,
        slow_call_duration=draw(st.sampled_from([None, 1.0])),
        slow_call_rate_threshold=draw(st.sampled_from([0.5, 1.0])),
        cooldown=draw(st.sampled_from([1.0, 2.5, 5.0])),
        trial_calls=draw(st.integers(1, 3)),
    )


OUTCOMES = st.sampled_from(["ok", "fail", "slow", "slow_fail"])


class BreakerMachine(RuleBasedStateMachine):
    clock: FakeClock
    core: BreakerCore
    model: Model
    pending: int

    @initialize(policy=policies())
    def setup(self, policy: BreakerPolicy) -> None:
        self.clock = FakeClock(start=1000.0)
        self.core = BreakerCore(policy, self.clock)
        self.model = Model(policy, self.clock)
        self.pending = 0

    @rule(seconds=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.5, 5.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def _outcome(self, outcome: str) -> tuple[bool, float]:
        return "fail" in outcome, 1.5 if "slow" in outcome else 0.1

    @rule(outcome=OUTCOMES)
    def call(self, outcome: str) -> None:
        answer = self.core.permit()
        assert answer == self.model.permit()
        if answer is None:
            failed, duration = self._outcome(outcome)
            if outcome == "ok":  # the fast path healthy calls take
                self.core.record_success()
                duration = 0.0
            else:
                self.core.record(failed, duration)
            self.model.record(failed, duration)

    @rule()
    def start_call(self) -> None:
        answer = self.core.permit()
        assert answer == self.model.permit()
        if answer is None:
            self.pending += 1

    @precondition(lambda self: self.pending > 0)
    @rule(outcome=OUTCOMES)
    def finish_call(self, outcome: str) -> None:
        self.pending -= 1
        failed, duration = self._outcome(outcome)
        self.core.record(failed, duration)
        self.model.record(failed, duration)

    @precondition(lambda self: self.pending > 0)
    @rule()
    def release_call(self) -> None:
        self.pending -= 1
        self.core.release()
        self.model.release()

    @invariant()
    def same_state(self) -> None:
        assert self.core.state == self.model.state
        if self.core.state == "open":
            assert self.core.open_until == self.model.open_until
        if self.core.state == "closed":
            window = self.model.window()
            assert self.core.window_counts() == (
                len(window),
                sum(o[1] for o in window),
                sum(o[2] for o in window),
            )


BreakerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40)
TestBreakerStateMachine = BreakerMachine.TestCase


def test_fast_success_path_judges_when_the_window_first_fills() -> None:
    core = BreakerCore(BreakerPolicy(window=4, minimum_calls=2), FakeClock())
    assert core.record(failed=True) is None
    assert core.record_success() == "open"  # 1 failure in 2 calls: 50%


def test_fast_success_path_on_a_full_window_never_trips() -> None:
    core = BreakerCore(
        BreakerPolicy(window=3, minimum_calls=3, failure_rate_threshold=0.75), FakeClock()
    )
    core.record(failed=True)
    core.record(failed=True)
    assert core.record_success() is None  # F F S: 2 of 3 is below 75%
    assert core.record(failed=True) is None  # replaces the first F
    assert core.record(failed=True) is None  # replaces the second F
    assert core.record(failed=True) == "open"  # replaces the S: 3 of 3
