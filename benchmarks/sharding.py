"""Sharding: lookup speed against uhashring, keys moved by adding a node, load balance.

``python -m benchmarks sharding`` measures; ``python -m benchmarks.sharding PATH`` draws the
docs chart (keys moved and max/mean load per scheme) into PATH.
"""

from __future__ import annotations

import random
import sys
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import uhashring

from benchmarks.harness import Bench
from scalepatterns.events import Listeners
from scalepatterns.sharding import (
    BoundedLoadRing,
    HashRing,
    JumpHash,
    Rendezvous,
    ShardRouter,
    jump_hash,
    plan_rebalance,
)
from scalepatterns.sharding._keys import md5

NODES = [f"node-{i}" for i in range(10)]
EPSILON = 0.25


def _schemes() -> dict[str, Callable[[list[str]], Any]]:
    return {
        "HashRing (ketama, 160 vnodes)": HashRing,
        "HashRing (4 vnodes)": lambda nodes: HashRing(nodes, vnodes=4),
        "JumpHash": JumpHash,
        "Rendezvous": Rendezvous,
        "uhashring.HashRing": _Uhash,
    }


class _Uhash:
    def __init__(self, nodes: list[str]) -> None:
        self.ring = uhashring.HashRing(nodes)
        self.nodes = tuple(nodes)
        self.node_for = self.ring.get_node

    def add_node(self, node: str) -> None:
        self.ring.add_node(node)


def zipf_keys(count: int, distinct: int, s: float = 1.1, seed: int = 7) -> list[str]:
    """`count` requests over `distinct` keys whose popularity follows Zipf(s)."""
    population = [f"item:{i}" for i in range(distinct)]
    weights = [1 / (rank + 1) ** s for rank in range(distinct)]
    return random.Random(seed).choices(population, weights=weights, k=count)


def moved_fractions(keys: list[str]) -> dict[str, float]:
    """The fraction of `keys` that change owner when an 11th node joins 10, per scheme."""
    result: dict[str, float] = {}
    for name, make in _schemes().items():
        before, after = make(NODES), make(NODES)
        after.add_node("node-10")
        result[name] = plan_rebalance(before, after, keys).fraction
    for name, vnodes in _bounded().items():
        bounded = BoundedLoadRing(NODES, epsilon=EPSILON, vnodes=vnodes)
        for key in keys:
            bounded.assign(key)
        result[name] = len(bounded.add_node("node-10")) / len(keys)
    return result


def _bounded() -> dict[str, int]:
    return {
        f"BoundedLoadRing (160 vnodes, eps={EPSILON})": 160,
        f"BoundedLoadRing (4 vnodes, eps={EPSILON})": 4,
    }


def load_ratios(keys: list[str]) -> dict[str, float]:
    """max/mean of the keys (or requests, with repeats) each of the 10 nodes gets."""
    result: dict[str, float] = {}
    for name, make in _schemes().items():
        placement = make(NODES)
        counts = Counter(placement.node_for(k) for k in keys)
        result[name] = max(counts.values()) / (len(keys) / len(NODES))
    for name, vnodes in _bounded().items():
        bounded = BoundedLoadRing(NODES, epsilon=EPSILON, vnodes=vnodes)
        counts = Counter(bounded.assign(k) for k in keys)
        result[name] = max(counts.values()) / (len(keys) / len(NODES))
    return result


def run(bench: Bench) -> None:
    keys = [f"user:{i}" for i in range(1000)]
    ours, theirs = HashRing(NODES), uhashring.HashRing(NODES)
    assert [ours.node_for(k) for k in keys] == [theirs.get_node(k) for k in keys]
    jump, hrw = JumpHash(NODES), Rendezvous(NODES)

    def batch(fn: Callable[[str], object]) -> Callable[[], None]:
        def go() -> None:
            for key in keys:
                fn(key)

        return go

    def crc32_jump(key: str) -> int:
        return jump_hash(zlib.crc32(key.encode()), 10)

    def md5_floor(key: str) -> bytes:
        return md5(key.encode()).digest()

    bench.compare(
        "key lookup, 10 nodes (batches of 1000 keys)",
        {
            "scalepatterns HashRing.node_for": batch(ours.node_for),
            "uhashring HashRing.get_node": batch(theirs.get_node),
            "scalepatterns JumpHash.node_for": batch(jump.node_for),
            "scalepatterns Rendezvous.node_for": batch(hrw.node_for),
            "plain jump hash on crc32": batch(crc32_jump),
            "md5 of the key, CPython's _md5 (floor)": batch(md5_floor),
        },
        baseline="uhashring HashRing.get_node",
        number=40,
        ops=len(keys),
        target="HashRing at least 2x faster than uhashring (ratio <= 0.50)",
        note=(
            "Identical placements asserted before timing. The floor is the MD5 that "
            "uhashring's placement requires, with the same built-in MD5 HashRing uses."
        ),
    )

    resources = {node: f"postgresql://{node}/app" for node in NODES}
    router = ShardRouter(ours, resources, listeners=Listeners())

    def ring_and_dict(key: str) -> str:
        return resources[ours.node_for(key)]

    bench.compare(
        "route a key to its shard's resource (batches of 1000 keys)",
        {
            "scalepatterns ShardRouter.for_key": batch(router.for_key),
            "HashRing.node_for + dict lookup (floor)": batch(ring_and_dict),
        },
        baseline="HashRing.node_for + dict lookup (floor)",
        number=40,
        ops=len(keys),
        note=(
            "The router adds a lock-free per-shard counter (for the skew report) and an "
            "event check."
        ),
    )

    count = bench.scale(100_000, 5_000)
    uniform = [f"user:{i}" for i in range(count)]
    ideal = 1 / 11
    moved = moved_fractions(uniform)
    bench.record(
        f"keys moved when an 11th node joins 10 ({count} keys; ideal 1/11 = {ideal:.4f})",
        {
            **{f"{name}: fraction": value for name, value in moved.items()},
            **{f"{name}: x ideal": value / ideal for name, value in moved.items()},
        },
        target="within 1.1x of the ideal 1/11 per scheme",
    )
    bench.record(
        f"max/mean keys per node, {count} distinct keys on 10 nodes",
        load_ratios(uniform),
        target=f"bounded-load ring at most 1+epsilon = {1 + EPSILON}",
    )
    skewed = zipf_keys(count, max(1000, count // 10))
    bench.record(
        f"max/mean requests per node, {count} Zipf(1.1) requests on 10 nodes",
        load_ratios(skewed),
        note=(
            "Requests with repeats: every placement sends all requests for one key to one "
            "node, so the hottest key sets the floor. The bounded-load ring caps distinct "
            "keys per node, not requests (a repeated key keeps its node)."
        ),
    )


def draw(path: str, count: int = 100_000) -> None:
    """The docs chart: keys moved by an 11th node, and max/mean load, per scheme."""
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    uniform = [f"user:{i}" for i in range(count)]
    moved = moved_fractions(uniform)
    balance = load_ratios(uniform)
    skew = load_ratios(zipf_keys(count, count // 10))
    names = list(moved)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    left.barh(names, [moved[n] for n in names], color="#2b7bba")
    left.axvline(1 / 11, color="black", linewidth=0.8, linestyle="--", label="ideal 1/11")
    left.axvline(1.1 / 11, color="grey", linewidth=0.8, linestyle=":", label="1.1 x ideal")
    left.set_title(f"keys moved when an 11th node joins 10 ({count} keys)", fontsize=9)
    left.legend(fontsize=7, loc="lower right")
    left.invert_yaxis()
    y = range(len(names))
    right.barh([i - 0.2 for i in y], [balance[n] for n in names], height=0.4, label="uniform keys")
    right.barh(
        [i + 0.2 for i in y], [skew[n] for n in names], height=0.4, label="Zipf(1.1) requests"
    )
    right.set_yticks(list(y), [""] * len(names))
    right.axvline(1 + EPSILON, color="black", linewidth=0.8, linestyle="--", label="1 + eps")
    right.set_xlim(0, max([*balance.values(), *skew.values()]) * 1.35)
    right.set_title("max/mean load over 10 nodes (1.0 = even)", fontsize=9)
    right.legend(fontsize=7, loc="upper right")
    right.invert_yaxis()
    for ax in (left, right):
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}: moved {moved}, balance {balance}, zipf {skew}")


if __name__ == "__main__":
    draw(sys.argv[1] if len(sys.argv) > 1 else "docs/sharding-balance.png")
