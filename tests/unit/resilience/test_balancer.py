"""LoadBalancer: fairness of each strategy (properties), passive and active health."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter

import pytest
import uhashring
from hypothesis import given
from hypothesis import strategies as st

from scalepatterns import ConfigurationError, EventRecorder, FakeClock, Listeners
from scalepatterns.resilience import (
    EndpointEjected,
    EndpointReadmitted,
    LoadBalancer,
    NoHealthyEndpoint,
    PowerOfTwoChoices,
)

NAMES = st.integers(1, 8).map(lambda n: [f"10.0.0.{i}:80" for i in range(n)])


def picks(lb: LoadBalancer[str], count: int, key: str | None = None) -> list[str]:
    chosen = []
    for _ in range(count):
        with lb.pick(key) as endpoint:
            chosen.append(endpoint)
    return chosen


@given(endpoints=NAMES, rounds=st.integers(1, 20))
def test_round_robin_gives_each_endpoint_the_same_count(endpoints: list[str], rounds: int) -> None:
    lb = LoadBalancer(endpoints, "round_robin", listeners=Listeners())
    counts = Counter(picks(lb, rounds * len(endpoints)))
    assert counts == dict.fromkeys(endpoints, rounds)


@given(weights=st.lists(st.integers(1, 10), min_size=1, max_size=6), cycles=st.integers(1, 5))
def test_weighted_round_robin_is_exact_per_cycle_and_smooth(
    weights: list[int], cycles: int
) -> None:
    endpoints = {f"e{i}": w for i, w in enumerate(weights)}
    lb = LoadBalancer(endpoints, "weighted_round_robin", listeners=Listeners())
    total = sum(weights)
    sequence = picks(lb, cycles * total)
    assert Counter(sequence) == {e: w * cycles for e, w in endpoints.items()}
    # smooth: in every prefix each endpoint is within its share +- 1 of the ideal
    counts: Counter[str] = Counter()
    for index, endpoint in enumerate(sequence, start=1):
        counts[endpoint] += 1
        for name, weight in endpoints.items():
            assert abs(counts[name] - index * weight / total) < len(weights)


def test_weighted_round_robin_interleaves_like_nginx() -> None:
    lb = LoadBalancer({"a": 5, "b": 1, "c": 1}, "weighted_round_robin", listeners=Listeners())
    assert picks(lb, 7) == ["a", "a", "b", "a", "c", "a", "a"]


@given(endpoints=NAMES, actions=st.lists(st.booleans(), max_size=60))
def test_least_connections_always_picks_a_least_loaded_endpoint(
    endpoints: list[str], actions: list[bool]
) -> None:
    lb = LoadBalancer(endpoints, "least_connections", listeners=Listeners())
    open_picks: list[contextlib.AbstractContextManager[str]] = []
    for open_one in actions:
        if open_one or not open_picks:
            before = {name: s.active for name, s in lb.stats().items()}
            pick = lb.pick()
            endpoint = pick.__enter__()
            assert before[endpoint] == min(before.values())
            open_picks.append(pick)
        else:
            open_picks.pop(random.Random(len(open_picks)).randrange(len(open_picks))).__exit__(
                None, None, None
            )


@given(endpoints=NAMES, keys=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=30))
def test_consistent_hash_matches_uhashring_and_is_sticky(
    endpoints: list[str], keys: list[str]
) -> None:
    lb = LoadBalancer(endpoints, "consistent_hash", listeners=Listeners())
    ring = uhashring.HashRing(nodes={e: {"weight": 1} for e in endpoints})
    for key in keys:
        first = picks(lb, 1, key)[0]
        assert first == ring.get_node(key)
        assert picks(lb, 1, key) == [first]


def test_consistent_hash_moves_only_the_keys_of_an_ejected_endpoint() -> None:
    clock = FakeClock()
    endpoints = ["a", "b", "c", "d"]
    lb = LoadBalancer(
        endpoints, "consistent_hash", failure_threshold=1, clock=clock, listeners=Listeners()
    )
    keys = [f"user-{i}" for i in range(300)]
    before = {k: picks(lb, 1, k)[0] for k in keys}
    victim = before["user-0"]
    with pytest.raises(ConnectionError), lb.pick("user-0"):
        raise ConnectionError
    after = {k: picks(lb, 1, k)[0] for k in keys}
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == victim}
    assert victim not in after.values()


@given(endpoints=st.integers(2, 6), seed=st.integers(0, 1000))
def test_power_of_two_never_picks_the_slowest_and_favours_the_fastest(
    endpoints: int, seed: int
) -> None:
    clock = FakeClock()
    names = [f"e{i}" for i in range(endpoints)]
    lb = LoadBalancer(
        names, PowerOfTwoChoices(random.Random(seed)), clock=clock, listeners=Listeners()
    )
    for index, name in enumerate(names):  # teach it latencies 1, 2, 3... (ms)
        target = next(t for t in lb._endpoints if t.name == name)
        target.ewma = (index + 1) / 1000
        target.calls = 1
    counts: Counter[str] = Counter()
    for _ in range(200):
        with lb.pick() as endpoint:
            counts[endpoint] += 1
            clock.advance((names.index(endpoint) + 1) / 1000)  # it keeps its latency
    assert counts[names[-1]] == 0
    assert counts[names[0]] >= 200 / endpoints


def test_pick_records_latency_and_outcome() -> None:
    clock = FakeClock()
    lb = LoadBalancer(["a"], listeners=Listeners(), clock=clock, ewma_alpha=0.5)
    with lb.pick():
        clock.advance(0.2)
    with lb.pick():
        clock.advance(0.4)
    with pytest.raises(KeyError), lb.pick():
        raise KeyError("not a failure of the endpoint")  # still counted (on=Exception)
    stats = lb.stats()["a"]
    assert (stats.calls, stats.failures, stats.active) == (3, 1, 0)
    assert stats.ewma_latency == pytest.approx(0.15)  # 0.2 -> 0.3 -> 0.15 (last took 0 s)


def test_exceptions_outside_failure_on_release_without_counting() -> None:
    lb = LoadBalancer(["a"], on=ConnectionError, listeners=Listeners())
    with pytest.raises(KeyError), lb.pick():
        raise KeyError
    stats = lb.stats()["a"]
    assert (stats.calls, stats.failures, stats.active) == (0, 0, 0)


def test_ejection_trial_and_readmission() -> None:
    clock, listeners, recorder = FakeClock(), Listeners(), EventRecorder()
    listeners.add(recorder)
    lb = LoadBalancer(
        ["a", "b"], failure_threshold=3, cooldown=10, clock=clock, listeners=listeners
    )

    def call(fail_on: str) -> str:
        with contextlib.suppress(ConnectionError), lb.pick() as endpoint:
            if endpoint == fail_on:
                raise ConnectionError
        return endpoint

    for _ in range(6):
        call(fail_on="a")
    assert lb.stats()["a"].state == "ejected"
    assert {call(fail_on="a") for _ in range(10)} == {"b"}  # no traffic to a
    (ejected,) = recorder.of_type(EndpointEjected)
    assert (ejected.endpoint, ejected.reason, ejected.duration) == ("a", "consecutive_failures", 10)
    clock.advance(10)
    assert lb.stats()["a"].state == "trial"
    seen = [call(fail_on="a") for _ in range(2)]
    assert "a" in seen  # the trial went to a, and failed: ejected for twice as long
    assert lb.stats()["a"].state == "ejected"
    assert recorder.of_type(EndpointEjected)[-1].duration == 20
    clock.advance(20)
    assert "a" in [call(fail_on="nobody") for _ in range(2)]
    assert lb.stats()["a"].state == "up"
    assert [e.endpoint for e in recorder.of_type(EndpointReadmitted)] == ["a"]
    assert recorder.of_type(EndpointEjected)[-1].duration == 20  # no further ejection


def test_failure_rate_ejection() -> None:
    lb = LoadBalancer(
        ["a", "b"],
        failure_threshold=None,
        eject_failure_rate=0.5,
        failure_window=10,
        min_calls=10,
        listeners=Listeners(),
        clock=FakeClock(),
    )
    for i in range(22):
        with contextlib.suppress(ConnectionError), lb.pick() as endpoint:
            if endpoint == "a" and i % 4 == 0:  # every other call to a fails
                raise ConnectionError
    assert lb.stats()["a"].state == "ejected"
    assert lb.stats()["b"].state == "up"


def test_max_ejected_keeps_some_endpoints_and_none_left_raises() -> None:
    clock = FakeClock()
    lb = LoadBalancer(
        ["a", "b"], failure_threshold=1, max_ejected=0.5, clock=clock, listeners=Listeners()
    )
    for _ in range(4):
        with contextlib.suppress(ConnectionError), lb.pick():
            raise ConnectionError
    states = sorted(s.state for s in lb.stats().values())
    assert states == ["ejected", "up"]  # the second ejection was refused
    one = LoadBalancer(
        ["only"], failure_threshold=1, max_ejected=1.0, clock=clock, listeners=Listeners()
    )
    with contextlib.suppress(ConnectionError), one.pick():
        raise ConnectionError
    with pytest.raises(NoHealthyEndpoint) as info, one.pick():
        pass
    assert info.value.retry_after == 10.0


def test_active_health_checks_sync_and_async() -> None:
    healthy = {"a": True, "b": False}
    listeners, recorder = Listeners(), EventRecorder()
    listeners.add(recorder)
    lb = LoadBalancer(["a", "b"], health_check=lambda e: healthy[e], listeners=listeners)
    assert lb.check_health() == {"a": True, "b": False}
    assert set(picks(lb, 4)) == {"a"}
    assert lb.stats()["b"].state == "unhealthy"
    healthy["b"] = True

    async def acheck(endpoint: str) -> bool:
        return healthy[endpoint]

    alb = LoadBalancer(["a", "b"], health_check=acheck, listeners=listeners)
    assert asyncio.run(alb.acheck_health()) == {"a": True, "b": True}
    assert lb.check_health() == {"a": True, "b": True}
    assert set(picks(lb, 4)) == {"a", "b"}
    assert [e.reason for e in recorder.of_type(EndpointEjected)] == ["health_check"]
    assert [e.endpoint for e in recorder.of_type(EndpointReadmitted)] == ["b"]
    with pytest.raises(TypeError):
        alb.check_health()


def test_health_check_that_raises_means_unhealthy() -> None:
    def check(endpoint: str) -> bool:
        raise OSError("refused")

    lb = LoadBalancer(["a"], health_check=check, listeners=Listeners())
    assert lb.check_health() == {"a": False}
    with pytest.raises(NoHealthyEndpoint) as info, lb.pick():
        pass
    assert info.value.retry_after is None


def test_background_health_checks_stop() -> None:
    checked: list[str] = []
    lb = LoadBalancer(
        ["a"], health_check=lambda e: checked.append(e) is None, listeners=Listeners()
    )
    stop = lb.start_health_checks(0.001)
    stop()
    assert checked
    assert set(checked) == {"a"}


def test_background_health_checks_outlive_a_failing_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds: list[int] = []
    second_round = threading.Event()

    class Ambiguous:  # like a numpy array: its truth value can raise
        def __bool__(self) -> bool:
            rounds.append(1)
            if len(rounds) == 1:
                raise ValueError("truth value is ambiguous")
            second_round.set()
            return False

    lb = LoadBalancer(["a"], health_check=lambda e: Ambiguous(), listeners=Listeners())
    stop = lb.start_health_checks(0.001)
    assert second_round.wait(10), "the thread died with the first failing round"
    stop()
    assert "health checks of" in caplog.text
    assert "truth value is ambiguous" in caplog.text
    with pytest.raises(NoHealthyEndpoint), lb.pick():  # the later round's verdict applied
        pass


def test_background_health_checks_refuse_an_async_check() -> None:
    async def check(endpoint: str) -> bool:
        return True

    lb = LoadBalancer(["a"], health_check=check, listeners=Listeners())
    with pytest.raises(TypeError, match="acheck_health"):
        lb.start_health_checks(1.0)


def test_async_pick() -> None:
    lb = LoadBalancer(["a", "b"], listeners=Listeners())

    async def scenario() -> list[str]:
        chosen = []
        for _ in range(4):
            async with lb.pick() as endpoint:
                chosen.append(endpoint)
        return chosen

    assert asyncio.run(scenario()) == ["a", "b", "a", "b"]


@pytest.mark.parametrize(
    ("args", "kwargs", "parameter"),
    [
        ([[]], {}, "endpoints"),
        ([["a", "a"]], {}, "endpoints"),
        (["abc"], {}, "endpoints"),
        ([{"a": 0}], {}, "weight of 'a'"),
        ([["a"], "random"], {}, "strategy"),
        ([["a"]], {"failure_threshold": 0}, "failure_threshold"),
        ([["a"]], {"eject_failure_rate": 2}, "eject_failure_rate"),
        ([["a"]], {"min_calls": 50}, "min_calls"),
        ([["a"]], {"cooldown": 0}, "cooldown"),
        ([["a"]], {"ewma_alpha": 0}, "ewma_alpha"),
        ([["a"]], {"max_ejected": 2}, "max_ejected"),
    ],
)
def test_bad_configuration(args: list[object], kwargs: dict[str, object], parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        LoadBalancer(*args, **kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == parameter


def test_least_connections_spreads_concurrent_async_calls() -> None:
    lb = LoadBalancer(["a", "b", "c"], "least_connections", listeners=Listeners())
    peak: dict[str, int] = {}

    async def call(release: asyncio.Event) -> None:
        async with lb.pick() as endpoint:
            active = lb.stats()[endpoint].active
            peak[endpoint] = max(peak.get(endpoint, 0), active)
            await release.wait()

    async def scenario() -> None:
        release = asyncio.Event()
        tasks = [asyncio.ensure_future(call(release)) for _ in range(9)]
        await asyncio.sleep(0)
        assert {name: s.active for name, s in lb.stats().items()} == {"a": 3, "b": 3, "c": 3}
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert peak == {"a": 3, "b": 3, "c": 3}
    assert all(s.active == 0 and s.calls == 3 for s in lb.stats().values())
