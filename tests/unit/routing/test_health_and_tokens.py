"""Property tests of the pure core: replica rotation, balancing, tokens, timelines."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalepatterns.clock import FakeClock
from scalepatterns.errors import ConfigurationError
from scalepatterns.routing import (
    ConsistencyToken,
    InvalidToken,
    LagSample,
    LeastLag,
    RandomChoice,
    ReplicaHealth,
    RoundRobin,
    Timeline,
    TimelineWatch,
    Weighted,
)
from scalepatterns.routing.token import format_lsn, parse_lsn

NAMES = ["r1", "r2", "r3"]
lsns = st.integers(min_value=0, max_value=2**64 - 1)
timelines = st.builds(Timeline, st.integers(0, 2**64 - 1), st.integers(1, 2**32 - 1))
samples = st.builds(
    LagSample,
    lag_bytes=st.none() | st.integers(0, 10**9),
    lag_seconds=st.none() | st.floats(0, 1e4, allow_nan=False),
    replay_lsn=st.none() | lsns,
)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("sample"), st.sampled_from(NAMES), samples),
        st.tuples(st.just("fail"), st.sampled_from(NAMES), st.none()),
        st.tuples(st.just("ok"), st.sampled_from(NAMES), st.none()),
        st.tuples(st.just("wait"), st.none(), st.floats(0, 30)),
    ),
    max_size=40,
)


@given(actions, st.integers(1, 3))
def test_rotation_is_exactly_the_replicas_neither_lagging_nor_cooling_down(
    steps: list[tuple[str, str | None, object]], threshold: int
) -> None:
    clock = FakeClock()
    health = ReplicaHealth(
        NAMES,
        max_lag_seconds=5.0,
        max_lag_bytes=1_000_000,
        failure_threshold=threshold,
        cooldown=10.0,
        clock=clock,
    )
    last_sample: dict[str, LagSample] = {}
    failures = dict.fromkeys(NAMES, 0)
    out_until = dict.fromkeys(NAMES, 0.0)
    ejected = set()
    for kind, name, arg in steps:
        if kind == "wait":
            clock.advance(arg)  # type: ignore[arg-type]
            continue
        assert name is not None
        if kind == "sample":
            assert isinstance(arg, LagSample)
            transitions = health.record_sample(name, arg)
            if arg.lag_seconds is not None or arg.lag_bytes is not None:
                last_sample[name] = arg  # one without lag figures leaves the lag verdict
            failures[name], out_until[name] = 0, 0.0
        elif kind == "fail":
            transitions = health.record_failure(name)
            failures[name] += 1
            if failures[name] >= threshold:
                out_until[name] = clock.monotonic() + 10.0
        else:
            transitions = health.record_success(name)
            failures[name], out_until[name] = 0, 0.0
        for t in transitions:
            assert t.replica == name
            (ejected.add if t.kind == "ejected" else ejected.discard)((name, t.reason))
        now = clock.monotonic()
        expected = []
        for n in NAMES:
            s = last_sample.get(n)
            lagging = s is not None and (
                (s.lag_seconds is not None and s.lag_seconds > 5.0)
                or (s.lag_bytes is not None and s.lag_bytes > 1_000_000)
            )
            cooling = out_until[n] != 0.0 and now < out_until[n]
            if not lagging and not cooling:
                expected.append(n)
        assert health.in_rotation() == expected
        assert set(health.in_rotation()) <= set(NAMES)
        # ejection events were reported for every lag ejection still in force
        for n in NAMES:
            s = last_sample.get(n)
            if s is not None and s.lag_seconds is not None and s.lag_seconds > 5.0:
                assert (n, "lag") in ejected


@given(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True), lsns)
def test_candidates_for_a_token_have_replayed_it(names: list[str], need: int) -> None:
    health = ReplicaHealth(NAMES)
    for i, name in enumerate(names):
        health.record_sample(name, LagSample(replay_lsn=max(0, need - 1 + i)))
    ready = {c.name for c in health.candidates(need)}
    assert ready == {n for i, n in enumerate(names) if need - 1 + i >= need or need == 0}


@given(st.data())
def test_balancers_choose_among_the_candidates(data: st.DataObject) -> None:
    health = ReplicaHealth(NAMES, weights={"r1": 1, "r2": 3, "r3": 0.5})
    for name in NAMES:
        health.record_sample(
            name, data.draw(samples.filter(lambda s: (s.lag_seconds or 0) <= 30), label=name)
        )
    candidates = health.candidates()
    for balancer in (RoundRobin(), RandomChoice(), Weighted(), LeastLag()):
        assert balancer.choose(candidates) in candidates


def test_least_lag_prefers_measured_and_smallest() -> None:
    health = ReplicaHealth(NAMES)
    health.record_sample("r1", LagSample(lag_bytes=100, lag_seconds=0.5))
    health.record_sample("r2", LagSample(lag_bytes=5, lag_seconds=0.1))
    assert LeastLag().choose(health.candidates()).name == "r2"


def test_health_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="distinct"):
        ReplicaHealth(["a", "a"])
    with pytest.raises(ConfigurationError, match="failure_threshold"):
        ReplicaHealth(["a"], failure_threshold=0)
    with pytest.raises(ConfigurationError, match="cooldown"):
        ReplicaHealth(["a"], cooldown=0)
    with pytest.raises(ConfigurationError, match=r"weights\['a'\]"):
        ReplicaHealth(["a"], weights={"a": -1})
    with pytest.raises(ConfigurationError, match="max_lag"):
        ReplicaHealth(["a"], max_lag_seconds=-1)


def test_status_reports_why_a_replica_is_out() -> None:
    clock = FakeClock()
    health = ReplicaHealth(["a", "b"], max_lag_seconds=1.0, clock=clock)
    health.record_sample("a", LagSample(lag_bytes=10, lag_seconds=2.0, replay_lsn=7))
    health.record_failure("b")
    by_name = {s.name: s for s in health.status()}
    assert (by_name["a"].in_rotation, by_name["a"].ejected_for) == (False, "lag")
    assert by_name["a"].replay_lsn == 7
    assert (by_name["b"].in_rotation, by_name["b"].ejected_for) == (False, "unreachable")
    assert by_name["b"].consecutive_failures == 1


@given(lsns)
def test_lsn_text_round_trips(value: int) -> None:
    assert parse_lsn(format_lsn(value)) == value
    assert parse_lsn(format_lsn(value).lower()) == value


@given(lsns, st.none() | timelines)
def test_wal_tokens_round_trip(value: int, timeline: Timeline | None) -> None:
    token = ConsistencyToken.at_lsn(value, timeline)
    text = str(token)
    assert ConsistencyToken.parse(text) == token
    assert len(text) <= 64


def test_a_wal_token_names_its_history() -> None:
    token = ConsistencyToken.parse("v1:pg:6B9F6A3B1C2D3E4F:2:16/B374D848")
    assert token.timeline == Timeline(0x6B9F6A3B1C2D3E4F, 2)
    assert token.lsn == (0x16 << 32) | 0xB374D848
    assert ConsistencyToken.parse("v1:pg:16/B374D848").timeline is None  # the older layout
    for bad in ("v1:pg:1:0:0/1", "v1:pg:1:2:3:0/1", "v1:pg:1:2:", "v1:pg:x:2:0/1"):
        with pytest.raises(InvalidToken):
            ConsistencyToken.parse(bad)
    with pytest.raises(ValueError, match="timeline"):
        ConsistencyToken(wall_time=1.0, timeline=Timeline(1, 1))


@given(st.floats(0, 1e10, allow_nan=False))
def test_time_tokens_round_trip_to_the_microsecond(wall: float) -> None:
    token = ConsistencyToken.at_time(wall)
    parsed = ConsistencyToken.parse(str(token))
    assert parsed.wall_time is not None
    assert math.isclose(parsed.wall_time, wall, abs_tol=1e-5)


@given(st.text(max_size=80))
def test_arbitrary_text_is_a_token_only_in_the_strict_layouts(text: str) -> None:
    message = ""
    try:
        token = ConsistencyToken.parse(text)
    except InvalidToken as exc:
        message = str(exc)
    if message:
        assert "invalid consistency token" in message
        assert len(message) < 300  # a hostile token is not echoed in full
    else:
        assert text.startswith(("v1:pg:", "v1:t:"))
        assert (token.lsn is None) != (token.wall_time is None)


def test_newer_token_wins() -> None:
    one, two = Timeline(7, 1), Timeline(7, 2)
    a, b = ConsistencyToken.at_lsn(5, one), ConsistencyToken.at_lsn(9, one)
    assert a.newer(b) is b
    assert b.newer(a) is b
    assert a.newer(None) is a
    # a later timeline wins whatever the positions: its lower position is the newer history
    promoted = ConsistencyToken.at_lsn(1, two)
    assert b.newer(promoted) is promoted
    assert promoted.newer(b) is promoted
    legacy = ConsistencyToken.at_lsn(99, None)
    assert legacy.newer(a) is a
    assert a.newer(legacy) is a
    assert ConsistencyToken.at_time(3).newer(ConsistencyToken.at_time(4)).wall_time == 4


def test_a_token_holds_exactly_one_position() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ConsistencyToken()
    with pytest.raises(ValueError, match="64-bit"):
        ConsistencyToken(lsn=-1)


def test_a_sample_without_lag_figures_keeps_a_lagging_replica_out() -> None:
    """With the primary unreachable a sample has no lag: that is not "caught up"."""
    health = ReplicaHealth(["r1"], max_lag_bytes=100)
    assert [t.kind for t in health.record_sample("r1", LagSample(lag_bytes=1000))] == ["ejected"]
    assert health.record_sample("r1", LagSample(replay_lsn=5)) == []
    assert health.in_rotation() == []
    assert [t.kind for t in health.record_sample("r1", LagSample(lag_bytes=10))] == ["readmitted"]
    assert health.in_rotation() == ["r1"]


def test_the_timeline_watch_follows_promotions_and_refuses_the_old_primary() -> None:
    watch = TimelineWatch()
    assert watch.current is None
    assert not watch.covers(Timeline(7, 1), Timeline(7, 1))  # nothing seen: nothing covered
    assert watch.advance(Timeline(7, 1), primary=True) is None
    assert watch.covers(Timeline(7, 1), Timeline(7, 1))
    assert not watch.behind(Timeline(7, 1))
    # a replica on a later timeline proves a promotion happened
    assert watch.advance(Timeline(7, 2), primary=False) == Timeline(7, 1)
    assert watch.behind(Timeline(7, 1))
    assert not watch.behind(Timeline(8, 1))  # another cluster is not "behind"
    assert not watch.covers(Timeline(7, 1), Timeline(7, 1))  # the dead history
    assert not watch.covers(Timeline(7, 2), Timeline(7, 1))  # a replica not known to follow
    assert not watch.covers(None, Timeline(7, 2))  # a token without a history
    assert watch.covers(Timeline(7, 2), Timeline(7, 2))
    # older timelines and foreign replicas never move it back
    assert watch.advance(Timeline(7, 1), primary=True) is None
    assert watch.advance(Timeline(9, 5), primary=False) is None
    assert watch.current == Timeline(7, 2)
    # the primary engine now reaches another cluster: that cluster is the truth
    assert watch.advance(Timeline(9, 1), primary=True) == Timeline(7, 2)
    assert watch.current == Timeline(9, 1)


@given(st.lists(st.tuples(timelines, st.booleans()), max_size=30))
def test_the_watch_never_goes_back_on_one_cluster(seen: list[tuple[Timeline, bool]]) -> None:
    watch = TimelineWatch()
    for timeline, primary in seen:
        before = watch.current
        watch.advance(timeline, primary=primary)
        after = watch.current
        assert after is not None
        if before is not None and before.system_id == after.system_id:
            assert after.timeline_id >= before.timeline_id
        if before is not None and after != before:
            assert primary or after.system_id == before.system_id


def test_token_candidates_must_be_on_the_tokens_timeline() -> None:
    old, new = Timeline(7, 1), Timeline(7, 2)
    health = ReplicaHealth(["stuck", "follower"])
    # the stuck server replayed far along the dead history; the follower is on the new one
    health.record_sample("stuck", LagSample(0, 0.0, replay_lsn=10_000, timeline=old))
    health.record_sample("follower", LagSample(0, 0.0, replay_lsn=500, timeline=new))
    assert [c.name for c in health.candidates(400, new)] == ["follower"]
    assert [c.name for c in health.candidates(600, new)] == []
    assert [c.name for c in health.candidates(400, old)] == ["stuck"]
    # positions move on within a timeline, and a new timeline replaces the old position
    health.note_position("stuck", 5, new)
    assert health.replay_lsn("stuck") == 5
    health.note_position("stuck", 3, new)
    assert health.replay_lsn("stuck") == 5
    assert {s.name: s.timeline for s in health.status()} == {"stuck": new, "follower": new}
