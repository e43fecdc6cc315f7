"""ShardRouter: routing, grouping, counters, skew, fan-out (threads and asyncio)."""

from __future__ import annotations

import asyncio

import pytest

from scalepatterns import ConfigurationError, EventRecorder, Listeners
from scalepatterns.sharding import (
    FanOutError,
    FanOutFinished,
    HashRing,
    JumpHash,
    ShardRouted,
    ShardRouter,
    merge_sorted,
    skew_report,
)

SHARDS = {"s1": "postgresql://a/db", "s2": "postgresql://b/db", "s3": "postgresql://c/db"}


def make_router(listeners: Listeners | None = None) -> ShardRouter[str]:
    return ShardRouter(HashRing(list(SHARDS)), SHARDS, name="users", listeners=listeners)


def test_for_key_returns_the_resource_of_the_owning_shard() -> None:
    router = make_router()
    ring = HashRing(list(SHARDS))
    for key in (f"user:{i}" for i in range(100)):
        assert router.for_key(key) == SHARDS[ring.node_for(key)]


def test_group_by_shard_partitions_keys_in_order() -> None:
    router = make_router()
    keys = [f"user:{i}" for i in range(50)]
    groups = router.group_by_shard(keys)
    assert sorted(k for ks in groups.values() for k in ks) == sorted(keys)
    for shard, owned in groups.items():
        assert all(router.placement.node_for(k) == shard for k in owned)
        assert owned == [k for k in keys if k in set(owned)]


def test_counts_and_skew_report_find_the_hot_shard() -> None:
    router = make_router()
    hot = next(f"user:{i}" for i in range(100) if router.placement.node_for(f"user:{i}") == "s2")
    for _ in range(90):
        router.for_key(hot)
    for i in range(30):
        router.for_key(f"user:{i}")
    counts = router.counts()
    assert sum(counts.values()) == 120
    report = router.skew()
    assert report.hottest == "s2"
    assert report.ratio == pytest.approx(report.max / 40)
    assert report.ratio > 2
    router.reset_counts()
    assert router.skew().ratio == 0.0
    assert skew_report({"a": 5, "b": 5}).ratio == 1.0
    assert "max/mean" in str(report)


def test_logical_shards_are_separate_from_resources() -> None:
    router = make_router()
    before = {k: router.shard_for(k) for k in (f"k{i}" for i in range(200))}
    old = router.replace("s2", "postgresql://new-host/db")
    assert old == SHARDS["s2"]
    after = {k: router.shard_for(k) for k in before}
    assert before == after  # moving a server is not a re-hash
    key = next(k for k, s in before.items() if s == "s2")
    assert router.for_key(key) == "postgresql://new-host/db"


def test_every_shard_needs_a_resource() -> None:
    with pytest.raises(ConfigurationError, match="missing"):
        ShardRouter(HashRing(["a", "b"]), {"a": 1})
    with pytest.raises(TypeError, match="node_for"):
        ShardRouter(object(), {})  # type: ignore[arg-type]


def test_events_name_the_shard_never_the_key() -> None:
    listeners, recorder = Listeners(), EventRecorder()
    listeners.add(recorder)
    router = make_router(listeners)
    router.for_key("secret-user-42")
    router.fan_out(lambda shard, url: shard)
    routed = recorder.of_type(ShardRouted)
    assert len(routed) == 1
    assert routed[0].source == "users"
    assert "secret" not in repr(routed[0])
    assert recorder.of_type(FanOutFinished) == [FanOutFinished("users", shards=3, failed=0)]


def test_fan_out_in_threads_and_merge() -> None:
    router = ShardRouter(JumpHash(3), {"0": [5, 1, 9], "1": [2, 8], "2": [7, 3, 4]})
    results = router.fan_out(lambda shard, rows: sorted(rows))
    assert results == {"0": [1, 5, 9], "1": [2, 8], "2": [3, 4, 7]}
    assert router.fan_out_merge(lambda s, rows: sorted(rows), limit=4) == [1, 2, 3, 4]
    top = router.fan_out_merge(lambda s, rows: sorted(rows, reverse=True), reverse=True, limit=3)
    assert top == [9, 8, 7]


def test_fan_out_failure_keeps_partial_results() -> None:
    router = ShardRouter(JumpHash(3), {"0": 0, "1": 1, "2": 2})

    def work(shard: str, value: int) -> int:
        if shard == "1":
            raise ConnectionError("shard 1 down")
        return value * 10

    with pytest.raises(FanOutError) as info:
        router.fan_out(work)
    assert set(info.value.errors) == {"1"}
    assert info.value.results == {"0": 0, "2": 20}
    assert isinstance(info.value.__cause__, ConnectionError)


def test_async_fan_out_matches_the_threaded_one() -> None:
    router = ShardRouter(JumpHash(3), {"0": [5, 1], "1": [2, 8], "2": [7, 3]})

    async def fetch(shard: str, rows: list[int]) -> list[int]:
        await asyncio.sleep(0)
        return sorted(rows)

    async def broken(shard: str, rows: list[int]) -> list[int]:
        if shard == "2":
            raise ConnectionError("down")
        return rows

    async def scenario() -> None:
        assert await router.afan_out(fetch) == router.fan_out(lambda s, r: sorted(r))
        assert await router.afan_out_merge(fetch, limit=3) == [1, 2, 3]
        with pytest.raises(FanOutError) as info:
            await router.afan_out(broken)
        assert set(info.value.errors) == {"2"}
        assert set(info.value.results) == {"0", "1"}

    asyncio.run(scenario())


def test_merge_sorted_with_key() -> None:
    parts = [[{"n": 1}, {"n": 4}], [{"n": 2}], []]
    assert [r["n"] for r in merge_sorted(parts, key=lambda r: r["n"])] == [1, 2, 4]
    assert merge_sorted([[1, 3], [2]], limit=0) == []


def test_placements_load_without_server_clients() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from scalepatterns import HashRing, ShardRouter\n"
        "from scalepatterns.sharding import BoundedLoadRing, RangeShards, plan_rebalance\n"
        "HashRing(['a']).node_for('k')\n"
        "loaded = [m for m in ('redis', 'sqlalchemy', 'psycopg') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_counts_are_exact_under_concurrent_routing() -> None:
    import threading

    router = make_router()
    keys = [f"user:{i}" for i in range(2500)]
    threads = [threading.Thread(target=lambda: [router.for_key(k) for k in keys]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    counts = router.counts()
    assert sum(counts.values()) == 4 * len(keys)
    ring = HashRing(list(SHARDS))
    assert counts == {s: 4 * sum(ring.node_for(k) == s for k in keys) for s in SHARDS}


def test_a_shard_added_later_is_routed_and_counted() -> None:
    ring = HashRing(["a"])
    router = ShardRouter(ring, {"a": "A"})
    ring.add_node("b")
    key = next(f"k{i}" for i in range(100) if ring.node_for(f"k{i}") == "b")
    with pytest.raises(ConfigurationError, match="'b'"):
        router.for_key(key)  # no resource yet: a clear error, not a KeyError
    router.add_shard("b", "B")
    assert router.for_key(key) == "B"
    assert router.counts()["b"] == 2  # the failed route was counted too
